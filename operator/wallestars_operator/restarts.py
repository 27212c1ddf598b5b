"""When kopf stops on an error, whether and when the operator runs it again (pure).

kopf ends its whole run when one of its root tasks fails, and some of its requests are
not retried: a discovery answer cut mid-body (``ClientPayloadError``) or a watch line
cut mid-JSON stops the operator (kopf#839). A Deployment would restart the container,
but only after the kubelet's CrashLoopBackOff, and a host-run operator not at all. A
transient error of the API server runs kopf again in the same process after a short,
growing delay; anything else (a bad setting, a 401/403, a bug) exits as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    # A run at least this long was healthy: the next failure starts the backoff afresh.
    healthy_after: float = 60.0
    # This many failed runs in a row, each shorter than healthy_after: give up (exit 1)
    # and let the kubelet's restart and the liveness probe take over.
    give_up_after: int = 10


def transient(exc: BaseException) -> bool:
    """An error the API server or the network may not repeat: worth running kopf again."""
    if isinstance(exc, aiohttp.ClientResponseError):  # an HTTP status from aiohttp itself
        return exc.status in RETRYABLE_STATUS
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError | json.JSONDecodeError):
        return True
    # kopf's APIError (a private class) carries the answer's HTTP status.
    status = getattr(exc, "status", None)
    return type(exc).__module__.startswith("kopf.") and status in RETRYABLE_STATUS


def after_failure(
    policy: RestartPolicy, failed_before: int, ran_for: float
) -> tuple[int, float | None]:
    """A run that lasted ``ran_for`` seconds failed, after ``failed_before`` failed runs in
    a row: the new count of failed runs in a row, and the wait before the next run (None:
    give up)."""
    failed = 1 if ran_for >= policy.healthy_after else failed_before + 1
    if failed >= policy.give_up_after:
        return failed, None
    return failed, min(policy.first_delay * 2 ** (failed - 1), policy.max_delay)
