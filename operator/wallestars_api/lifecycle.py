"""The AgentTask state machine: pure functions of (object, event, time) -> status patch.

Shared by the webhook service (callbacks) and the operator (dispatch, timeouts,
retries), so both decide the same way. Nothing here does I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from wallestars_sdk.protocol import (
    LOG_TAIL_LIMIT,
    CallbackBody,
    CallbackStatus,
    NextAction,
    Results,
)

from wallestars_api.conditions import set_condition
from wallestars_api.retry import RetryPolicy, decide

CALLBACK_HISTORY = 10  # status.callbacks keeps the newest this many (idempotency window)


class Phase(StrEnum):
    QUEUED = "Queued"
    DISPATCHED = "Dispatched"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"


TERMINAL = frozenset(
    {Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT, Phase.CANCELLED}
)
# An attempt is live (its agent may call back) only in these phases.
LIVE = frozenset({Phase.DISPATCHED, Phase.RUNNING})
ATTEMPT_LOG = "agent.log"  # the artifact an agent keeps its output in, per attempt
STACK_LIMIT = 4096  # characters of an error's stack kept in status (the end of it)
# What counts as a success in an Agent's successRate and on the dashboards' panels.
SUCCESS_PHASES = (Phase.SUCCEEDED, Phase.PARTIALLY_SUCCEEDED)


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)  # passes re-read the same (1-second) timestamps
def parse_ts(s: str | None) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it (``...Z``), timezone-aware."""
    if not s:
        return None
    t = datetime.fromisoformat(s)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def phase_of(obj: Mapping[str, Any]) -> Phase | None:
    p = (obj.get("status") or {}).get("phase")
    return Phase(p) if p else None


@dataclass
class CallbackOutcome:
    """What a verified callback does: the HTTP answer, and the status patch (if any)."""

    http_status: int
    verdict: str
    next_action: NextAction = NextAction.NONE
    patch: dict[str, Any] | None = None  # the new status fields; None means no write
    transition: tuple[str, str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def next_action_for(obj: Mapping[str, Any]) -> NextAction:
    """What an agent should do now, judged from the task alone (for repeated callbacks)."""
    if (obj.get("spec") or {}).get("cancel"):
        return NextAction.CANCEL
    phase = phase_of(obj)
    if phase == Phase.RETRYING:
        return NextAction.RETRY
    if phase in (Phase.FAILED, Phase.TIMED_OUT):
        return NextAction.ESCALATE
    return NextAction.NONE


def _attempt_record(
    status: Mapping[str, Any], attempt: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    attempts = [dict(a) for a in status.get("attempts") or []]
    for a in attempts:
        if a.get("attempt") == attempt:
            return attempts, a
    rec: dict[str, Any] = {"attempt": attempt}
    attempts.append(rec)
    return attempts, rec


def on_callback(
    obj: Mapping[str, Any],
    cb: CallbackBody,
    webhook_id: str,
    now: datetime,
    rand: float,
) -> CallbackOutcome:
    """Decide what a verified callback does to the AgentTask ``obj`` as last read."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if meta.get("uid") != cb.taskId:
        return CallbackOutcome(410, "unknown-task")
    if any(c.get("webhookId") == webhook_id for c in status.get("callbacks") or []):
        return CallbackOutcome(200, "duplicate", next_action_for(obj))
    phase = phase_of(obj)
    cancelling = phase == Phase.CANCELLED or (phase in LIVE and spec.get("cancel"))
    if cancelling and accepts_evidence(obj, cb.attempt, now):
        # The operator ends (or has ended) the task as Cancelled; the agent should stop
        # now. A stopped attempt's evidence (screenshot, trace) is kept; the phase stays.
        if cb.status == CallbackStatus.RUNNING or cb.results is None:
            return CallbackOutcome(200, "cancelled", NextAction.CANCEL)
        history = [*list(status.get("callbacks") or []), {
            "webhookId": webhook_id, "time": ts(now), "attempt": cb.attempt,
            "status": cb.status.value, "verdict": "evidence-after-cancel",
        }][-CALLBACK_HISTORY:]  # fmt: skip
        kept: dict[str, Any] = {"result": result_of(cb.results), "callbacks": history}
        return CallbackOutcome(200, "evidence-after-cancel", NextAction.CANCEL, kept)
    if phase in TERMINAL:
        return CallbackOutcome(410, "finished", next_action_for(obj))
    current = int(status.get("attempt") or 0)
    if cb.attempt != current or phase not in LIVE:
        return CallbackOutcome(409, "stale-attempt", metadata={"currentAttempt": current})
    assert phase is not None
    t = ts(now)
    conds = list(status.get("conditions") or [])
    attempts, rec = _attempt_record(status, cb.attempt)
    patch: dict[str, Any] = {}
    action = NextAction.NONE
    new_phase: Phase
    verdict = "accepted"

    if cb.status == CallbackStatus.RUNNING:
        new_phase = Phase.RUNNING
        if cb.progress is not None:
            patch["progress"] = cb.progress
        if not status.get("startTime"):
            patch["startTime"] = t
        rec.setdefault("startTime", t)
        if phase != Phase.RUNNING:
            patch["reason"] = "AgentRunning"
            patch["message"] = f"attempt {cb.attempt} is running on {cb.agentId}"
            conds = set_condition(conds, "Running", True, "AgentRunning", patch["message"], t)
    else:
        results = cb.results
        if cb.status in (CallbackStatus.SUCCESS, CallbackStatus.PARTIAL):
            new_phase = (
                Phase.SUCCEEDED
                if cb.status == CallbackStatus.SUCCESS
                else Phase.PARTIALLY_SUCCEEDED
            )
            patch["progress"] = (
                100
                if new_phase == Phase.SUCCEEDED
                else (cb.progress or status.get("progress") or 0)
            )
            patch["reason"] = new_phase.value
            patch["message"] = f"attempt {cb.attempt} {new_phase.value.lower()} on {cb.agentId}"
            patch["error"] = None
            rec["outcome"] = new_phase.value
            conds = set_condition(conds, "Running", False, "Completed", patch["message"], t)
            conds = set_condition(
                conds,
                "Succeeded",
                new_phase == Phase.SUCCEEDED,
                new_phase.value,
                patch["message"],
                t,
            )
        else:
            err = cb.error
            assert err is not None  # parse_callback guarantees it for failures
            f = failure(obj, err.code, err.message, err.retryable, now, rand, conds, rec, err.stack)
            patch.update(f.patch)
            conds, new_phase, action = f.conditions, f.phase, f.next_action
        rec["completionTime"] = t
        if results is not None:
            # The attempt's own log (the agent's output), linked from its record so it
            # outlives the pod and the next attempt's result.
            logs = [a.uri for a in results.artifacts if a.name == ATTEMPT_LOG]
            if logs:
                rec["logs"] = logs[0]
        if new_phase in TERMINAL:
            patch["completionTime"] = t
            started = parse_ts(
                status.get("startTime")
                or status.get("dispatchTime")
                or meta.get("creationTimestamp")
            )
            if started is not None:
                patch["durationSeconds"] = max((now - started).total_seconds(), 0.0)
        if results is not None:
            patch["result"] = result_of(results)
        if cb.progress is not None and "progress" not in patch:
            patch["progress"] = cb.progress

    history = [*list(status.get("callbacks") or []), {
        "webhookId": webhook_id, "time": t, "attempt": cb.attempt,
        "status": cb.status.value, "verdict": verdict,
    }][-CALLBACK_HISTORY:]  # fmt: skip
    patch["callbacks"] = history
    patch["attempts"] = attempts
    patch["conditions"] = conds
    patch["phase"] = new_phase.value
    transition = (phase.value, new_phase.value) if new_phase != phase else None
    return CallbackOutcome(200, verdict, action, patch, transition)


def fold_callbacks(
    obj: Mapping[str, Any],
    items: Sequence[tuple[CallbackBody, str]],
    now: datetime,
    rand: float,
) -> tuple[dict[str, Any] | None, list[CallbackOutcome]]:
    """Decide verified callbacks (body, webhook-id) as if each were written before the next.

    One status patch carries them all (a merge of each one's patch, each decided on the
    object with the earlier ones applied), so coalesced progress reports cost one write;
    each callback keeps its own answer. None when nothing is to be written.
    """
    cur: Mapping[str, Any] = obj
    merged: dict[str, Any] = {}
    outcomes: list[CallbackOutcome] = []
    for cb, webhook_id in items:
        out = on_callback(cur, cb, webhook_id, now, rand)
        outcomes.append(out)
        if out.patch is not None:
            merged.update(out.patch)
            cur = {**cur, "status": {**(cur.get("status") or {}), **out.patch}}
    return (merged if merged else None), outcomes


def result_of(results: Results) -> dict[str, Any]:
    """status.result from a callback's results."""
    result: dict[str, Any] = {}
    if results.data is not None:
        result["data"] = results.data
    if results.artifacts:
        result["artifacts"] = [a.model_dump(exclude_none=True) for a in results.artifacts]
    if results.logs:
        result["logs"] = results.logs[-LOG_TAIL_LIMIT:]
    if results.metrics:
        result["metrics"] = dict(results.metrics)
    return result


# How long after a cancel the stopped attempt may still hand in its evidence.
EVIDENCE_GRACE = timedelta(seconds=60)


def accepts_evidence(obj: Mapping[str, Any], attempt: int, now: datetime) -> bool:
    """May attempt ``attempt`` still upload artifacts / report results for this task?

    The running attempt may; so may the attempt a cancel stopped, for a short while,
    so the screenshot and trace of where it stopped are not lost.
    """
    status = obj.get("status") or {}
    if int(status.get("attempt") or 0) != attempt:
        return False
    phase = phase_of(obj)
    if phase in LIVE:
        return True
    if phase != Phase.CANCELLED:
        return False
    ended = parse_ts(status.get("completionTime"))
    return ended is not None and now - ended <= EVIDENCE_GRACE


@dataclass
class Failure:
    phase: Phase
    next_action: NextAction
    patch: dict[str, Any]
    conditions: list[dict[str, Any]]


def failure(
    obj: Mapping[str, Any],
    code: str,
    message: str,
    retryable: bool,
    now: datetime,
    rand: float,
    conds: list[dict[str, Any]],
    rec: dict[str, Any],
    stack: str | None = None,
) -> Failure:
    """An attempt failed (callback, timeout, missing callback): retry it or end the task.

    Updates the attempt record ``rec`` in place; returns the phase and status fields.
    """
    spec = obj.get("spec") or {}
    attempt = int((obj.get("status") or {}).get("attempt") or 1)
    t = ts(now)
    d = decide(RetryPolicy.from_spec(spec.get("retries")), attempt, retryable, rand)
    patch: dict[str, Any] = {
        "error": {"code": code[:128], "message": message[:4096], "retryable": retryable}
    }
    if stack:  # the agent's own trace: its last lines say where
        patch["error"]["stack"] = stack[-STACK_LIMIT:]
    elif ((obj.get("status") or {}).get("error") or {}).get("stack"):
        patch["error"]["stack"] = None  # an earlier attempt's (a merge patch keeps it)
    rec["outcome"] = Phase.FAILED.value
    rec["reason"] = code[:128]
    rec["message"] = message[:4096]
    rec["completionTime"] = t
    deadline = _deadline(obj)
    if d.retry and deadline is not None and now + timedelta(seconds=d.delay_seconds) >= deadline:
        d = type(d)(False, reason="DeadlineExceeded")
    short = f"attempt {attempt} failed ({code}: {message[:200]})"
    if d.retry:
        patch["nextAttemptTime"] = ts(now + timedelta(seconds=d.delay_seconds))
        patch["reason"] = "AttemptFailed"
        patch["message"] = f"{short}; retrying in {d.delay_seconds:.0f}s"
        conds = set_condition(conds, "Running", False, "AttemptFailed", patch["message"], t)
        return Failure(Phase.RETRYING, NextAction.RETRY, patch, conds)
    phase = (
        Phase.TIMED_OUT
        if d.reason == "DeadlineExceeded" or (code == "Timeout" and d.reason == "RetriesExhausted")
        else Phase.FAILED
    )
    patch["reason"] = (
        code if code in FAILURE_REASONS and d.reason != "DeadlineExceeded" else d.reason
    )
    patch["message"] = f"{short}; {d.reason}"
    patch["completionTime"] = t
    conds = set_condition(conds, "Running", False, d.reason, patch["message"], t)
    conds = set_condition(conds, "Succeeded", False, patch["reason"], patch["message"], t)
    return Failure(phase, NextAction.ESCALATE, patch, conds)


# Failure codes that are a better REASON for a failed task than how retries ended.
FAILURE_REASONS = frozenset(
    {
        "Timeout",
        "CallbackMissing",
        "OOMKilled",
        "Evicted",
        "UserError",
        "DispatchFailed",
        "AssertionFailed",
        "NavigationBlocked",
    }
)


def _deadline(obj: Mapping[str, Any]) -> datetime | None:
    seconds = (obj.get("spec") or {}).get("deadlineSeconds")
    created = parse_ts((obj.get("metadata") or {}).get("creationTimestamp"))
    if seconds is None or created is None:
        return None
    return created + timedelta(seconds=int(seconds))


# --- transitions the operator makes ------------------------------------------------------


@dataclass
class Transition:
    """A status patch (merge) and what it means, for the operator to write and announce."""

    patch: dict[str, Any]
    phase: Phase
    reason: str
    message: str
    warning: bool = False  # the Kubernetes Event's type: Warning rather than Normal


def dispatch(
    obj: Mapping[str, Any], agent: str, now: datetime, job: str | None = None
) -> Transition:
    """Queued (or Retrying) -> Dispatched: the next attempt is handed to ``agent``."""
    status = obj.get("status") or {}
    attempt = int(status.get("attempt") or 0) + 1
    t = ts(now)
    rec: dict[str, Any] = {"attempt": attempt, "agent": agent, "dispatchTime": t}
    if job:
        rec["job"] = job
    attempts = [*[dict(a) for a in status.get("attempts") or []][-20:], rec]
    message = f"attempt {attempt} dispatched to agent {agent}"
    conds = set_condition(
        status.get("conditions") or [], "Scheduled", True, "Dispatched", message, t
    )
    patch: dict[str, Any] = {
        "phase": Phase.DISPATCHED.value,
        "attempt": attempt,
        "agent": agent,
        "dispatchTime": t,
        "attempts": attempts,
        "conditions": conds,
        "reason": "Dispatched",
        "message": message,
        "queue": None,
        "nextAttemptTime": None,
    }
    if not status.get("createTime"):
        patch["createTime"] = (obj.get("metadata") or {}).get("creationTimestamp") or t
    return Transition(patch, Phase.DISPATCHED, "Dispatched", message)


def wait(
    obj: Mapping[str, Any], reason: str, message: str, position: int | None, now: datetime
) -> Transition | None:
    """Queued and waiting: say why (Scheduled=False) and where in the queue; None if already said."""
    status = obj.get("status") or {}
    queue = status.get("queue") or {}
    phase = phase_of(obj)
    if phase not in (None, Phase.QUEUED, Phase.RETRYING):
        return None
    same = (
        status.get("reason") == reason and queue.get("position") == position and phase is not None
    )
    if same:
        return None
    t = ts(now)
    conds = set_condition(status.get("conditions") or [], "Scheduled", False, reason, message, t)
    patch: dict[str, Any] = {
        "reason": reason,
        "message": message,
        "conditions": conds,
        "queue": {"position": position, "since": queue.get("since") or t}
        if position is not None
        else None,
    }
    if phase is None:
        patch["phase"] = Phase.QUEUED.value
        patch["createTime"] = (obj.get("metadata") or {}).get("creationTimestamp") or t
    return Transition(patch, phase or Phase.QUEUED, reason, message)


def end(
    obj: Mapping[str, Any],
    phase: Phase,
    reason: str,
    message: str,
    now: datetime,
    outcome: str | None = None,
) -> Transition:
    """A terminal transition decided by the operator (cancel, queue timeout, deadline)."""
    status = obj.get("status") or {}
    t = ts(now)
    conds = set_condition(status.get("conditions") or [], "Succeeded", False, reason, message, t)
    if phase_of(obj) in LIVE:
        conds = set_condition(conds, "Running", False, reason, message, t)
    patch: dict[str, Any] = {
        "phase": phase.value,
        "reason": reason,
        "message": message,
        "completionTime": t,
        "conditions": conds,
        "queue": None,
        "nextAttemptTime": None,
    }
    attempt = int(status.get("attempt") or 0)
    if attempt and phase_of(obj) in LIVE:
        attempts, rec = _attempt_record(status, attempt)
        rec.setdefault("outcome", outcome or phase.value)
        rec.setdefault("reason", reason)
        rec["completionTime"] = t
        patch["attempts"] = attempts
    return Transition(patch, phase, reason, message, warning=phase != Phase.SUCCEEDED)


def attempt_failed(
    obj: Mapping[str, Any],
    code: str,
    message: str,
    retryable: bool,
    now: datetime,
    rand: float,
    exit_code: int | None = None,
) -> Transition:
    """The live attempt failed without a (failure) callback: timeout, Job ended, dispatch refused."""
    status = obj.get("status") or {}
    attempt = int(status.get("attempt") or 1)
    attempts, rec = _attempt_record(status, attempt)
    if exit_code is not None:
        rec["exitCode"] = exit_code
    f = failure(obj, code, message, retryable, now, rand, list(status.get("conditions") or []), rec)
    patch = {**f.patch, "phase": f.phase.value, "attempts": attempts, "conditions": f.conditions}
    return Transition(patch, f.phase, patch["reason"], patch["message"], warning=True)
