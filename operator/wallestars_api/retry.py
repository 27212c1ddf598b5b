"""Retry policy: pure, shared by the operator and the webhook service."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULTS: dict[str, float] = {
    "limit": 3,
    "backoffSeconds": 10,
    "factor": 2,
    "maxBackoffSeconds": 300,
    "jitter": 0.2,
}


@dataclass(frozen=True)
class RetryPolicy:
    limit: int = 3
    backoff_seconds: float = 10
    factor: float = 2
    max_backoff_seconds: float = 300
    jitter: float = 0.2

    @classmethod
    def from_spec(cls, retries: Mapping[str, Any] | None) -> RetryPolicy:
        r = {**DEFAULTS, **(retries or {})}
        return cls(
            limit=int(r["limit"]),
            backoff_seconds=float(r["backoffSeconds"]),
            factor=float(r["factor"]),
            max_backoff_seconds=float(r["maxBackoffSeconds"]),
            jitter=float(r["jitter"]),
        )

    def backoff(self, failed_attempt: int, rand: float) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed.

        Exponential, capped, then jittered downwards by up to ``jitter`` of itself
        (``rand`` in [0, 1)), so retries of many tasks do not arrive together and the
        cap is never exceeded.
        """
        base = self.backoff_seconds * self.factor ** max(failed_attempt - 1, 0)
        capped = min(base, self.max_backoff_seconds)
        return capped * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_seconds: float = 0.0
    reason: str = ""


def decide(
    policy: RetryPolicy, failed_attempt: int, retryable: bool, rand: float | None = None
) -> Decision:
    """Retry or give up after attempt ``failed_attempt`` failed."""
    if not retryable:
        return Decision(False, reason="NonRetryableError")
    if failed_attempt > policy.limit:  # limit counts retries after the first attempt
        return Decision(False, reason="RetriesExhausted")
    r = random.random() if rand is None else rand  # noqa: S311 (jitter, not secrecy)
    return Decision(True, policy.backoff(failed_attempt, r))


# The longest an API server's Retry-After is obeyed for: a bad header must not stall us.
MAX_RETRY_AFTER_SECONDS = 60.0


def retry_after_seconds(status: int, header: str | None) -> float | None:
    """How long the API server asked us to wait: for 429 (API Priority and Fairness, or
    max-requests-inflight) and 503 (a server starting or stopping) only, from the
    Retry-After header in seconds (capped); a 429 without one means 1 s, as client-go
    reads it. None: the answer asks for no wait."""
    if status not in (429, 503):
        return None
    try:
        seconds = float(header) if header is not None else (1.0 if status == 429 else None)
    except ValueError:  # an HTTP-date, which the API server never sends: a short wait
        seconds = 1.0
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
