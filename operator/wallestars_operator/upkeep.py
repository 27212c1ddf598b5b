"""What one task needs now, decided from the caches alone: pure.

``decide`` is docs/operator.md's lifecycle table as code. The reconciler calls it for
every task that ``needs_care`` and carries out the answer in the background, so a
write lost to an API error is simply decided again on a later pass: nothing here
remembers that a write was sent, only what the API (as watched) and this process's
own invocations say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import LIVE, TERMINAL, Phase, parse_ts, phase_of

from wallestars_operator.manifests import attempt_name
from wallestars_operator.outcomes import job_end

# How long a live browser attempt may go without its Job before the Job is (re)made:
# the write of Dispatched comes first, so a crash between the two is repaired here.
JOB_REPAIR_SECONDS = 3.0
TIMEOUT_GRACE_SECONDS = 10.0
# A cloud attempt left Dispatched by a crashed operator, with no callback, is invoked again after this.
REDELIVER_SECONDS = 5.0


@dataclass(frozen=True)
class Refusal:
    """This process's attempt to start an attempt was refused: by the function (HTTP
    401, Lambda's error), by a missing or unusable Secret, or by the API server (the
    attempt's Job or key Secret). Kept until the cache shows the attempt has moved on."""

    attempt: int
    code: str  # DispatchFailed
    message: str
    retryable: bool


@dataclass(frozen=True)
class Facts:
    """What the caches and this process know of one task, beside the task itself."""

    browser: bool  # its agent is a browser agent
    agent_known: bool  # its agent is in the cache
    job: Mapping[str, Any] | None  # the current attempt's Job, if cached
    pod: Mapping[str, Any] | None  # the current attempt's pod, if cached
    invoked: bool  # this process invoked (or refused) the current cloud attempt
    refusal: Refusal | None  # the current attempt's start was refused
    callback_grace: float  # seconds a final callback may trail its Job's end


@dataclass(frozen=True)
class DeleteTask:
    """ttlSecondsAfterFinished is due."""


@dataclass(frozen=True)
class End:
    """The task ends now (cancel, deadline, queue timeout); its Job goes first, if any."""

    phase: Phase
    reason: str
    message: str
    delete_job: str | None


@dataclass(frozen=True)
class FailAttempt:
    """The current attempt failed without a final callback; retried by the task's policy."""

    code: str
    message: str
    retryable: bool
    exit_code: int | None = None
    delete_job: str | None = None


@dataclass(frozen=True)
class MakeAttemptObjects:
    """A live browser attempt has no Job (a crash between Dispatched and the create)."""


@dataclass(frozen=True)
class ReadPod:
    """The Job ended with no final callback: read its pod once, for the exit code and why."""

    job: str


@dataclass(frozen=True)
class Invoke:
    """A cloud attempt a crashed predecessor dispatched but may never have sent."""


Action = DeleteTask | End | FailAttempt | MakeAttemptObjects | ReadPod | Invoke


def job_of(obj: Mapping[str, Any]) -> str | None:
    """The name of the current attempt's Job (and key Secret), or None before dispatch."""
    meta, status = obj["metadata"], obj.get("status") or {}
    attempt = int(status.get("attempt") or 0)
    return attempt_name(meta["name"], meta["uid"], attempt) if attempt else None


def ttl_due(obj: Mapping[str, Any], now: datetime) -> bool:
    ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
    done = parse_ts((obj.get("status") or {}).get("completionTime"))
    return ttl is not None and done is not None and done + timedelta(seconds=int(ttl)) <= now


def decide(obj: Mapping[str, Any], f: Facts, now: datetime) -> Action | None:
    """The one thing this task needs now, or None. First matching row wins."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    phase = phase_of(obj)
    if phase in TERMINAL:
        return DeleteTask() if ttl_due(obj, now) else None
    live = phase in LIVE
    job = job_of(obj) if live and f.browser else None
    if spec.get("cancel"):
        return End(Phase.CANCELLED, "Cancelled", "cancelled (spec.cancel is true)", job)
    created = parse_ts(meta.get("creationTimestamp"))
    deadline = spec.get("deadlineSeconds")
    if (
        deadline is not None
        and created is not None
        and created + timedelta(seconds=int(deadline)) <= now
    ):
        return End(
            Phase.TIMED_OUT,
            "DeadlineExceeded",
            f"the task did not finish within spec.deadlineSeconds ({deadline}s)",
            job,
        )
    if phase in (None, Phase.QUEUED):
        limit = spec.get("queueTimeoutSeconds")
        since = parse_ts((status.get("queue") or {}).get("since")) or created
        if limit is not None and since is not None and since + timedelta(seconds=int(limit)) <= now:
            return End(
                Phase.TIMED_OUT,
                "QueueTimeout",
                f"no agent took the task within spec.queueTimeoutSeconds ({limit}s)",
                None,
            )
        return None
    if not live:
        return None  # Retrying: the scheduler dispatches the next attempt when it is due
    attempt = int(status.get("attempt") or 0)
    if f.refusal is not None and f.refusal.attempt == attempt:
        # Refused when it was started: fail it now with the real reason, and again on
        # every pass until the cache shows the write landed (the attempt moved on).
        return FailAttempt(f.refusal.code, f.refusal.message, f.refusal.retryable, None, job)
    dispatched = parse_ts(status.get("dispatchTime")) or now
    timeout = int(spec.get("timeoutSeconds", 300))
    if dispatched + timedelta(seconds=timeout + TIMEOUT_GRACE_SECONDS) <= now:
        return FailAttempt(
            "Timeout",
            f"attempt {attempt} ran past spec.timeoutSeconds ({timeout}s)",
            True,
            None,
            job,
        )
    elapsed = (now - dispatched).total_seconds()
    if not f.browser:
        called_back = any(c.get("attempt") == attempt for c in status.get("callbacks") or [])
        if (
            phase == Phase.DISPATCHED
            and not f.invoked
            and not called_back
            and elapsed >= REDELIVER_SECONDS
            and f.agent_known
        ):
            return Invoke()
        return None
    if f.job is None:
        return MakeAttemptObjects() if elapsed > JOB_REPAIR_SECONDS and f.agent_known else None
    if f.pod is None and job_end(f.job, None) is not None:
        return ReadPod(job or "")
    ended = job_end(f.job, f.pod)
    if ended is not None and (now - ended.finished).total_seconds() >= f.callback_grace:
        return FailAttempt(ended.code, ended.message, True, ended.exit_code)
    return None


def needs_care(obj: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``decide`` could have anything to do for this task now.

    Cheap and pure, so a pass over 10,000 finished tasks costs a dict lookup each: a
    finished task only matters once its TTL is due; a queued one only with a cancel,
    a deadline or a queue timeout; a live attempt always (timeouts, Job, redelivery).
    """
    spec = obj.get("spec") or {}
    phase = phase_of(obj)
    if phase in TERMINAL:
        return ttl_due(obj, now)
    if phase in LIVE:
        return True
    return bool(
        spec.get("cancel")
        or spec.get("deadlineSeconds") is not None
        or spec.get("queueTimeoutSeconds") is not None
    )
