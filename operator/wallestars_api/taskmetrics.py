"""Task outcome metrics, counted by whichever component writes the terminal phase.

The operator ends tasks that time out, are cancelled or fail to dispatch; the webhook
service ends those whose agent reported a result. Both count with this one
implementation, under the same names, so `sum()` over both jobs is every finished task
exactly once (a write that lost its resourceVersion race counts nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram

from wallestars_api.lifecycle import TERMINAL, Phase, parse_ts

TASKS = Counter(
    "wallestars_agenttasks_total", "AgentTasks that reached a terminal phase.", ["agent", "phase", "reason"]
)  # fmt: skip
DURATION = Histogram(
    "wallestars_agenttask_duration_seconds", "Creation to terminal phase.", ["agent", "phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)  # fmt: skip


EXECUTION = Histogram(
    "wallestars_agenttask_execution_seconds",
    "First start (the agent's first running report) to terminal phase.", ["agent", "phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)  # fmt: skip
ATTEMPTS = Counter(
    "wallestars_agenttask_attempts_total",
    "Attempts that ended, by outcome: the task's terminal phase, or Retried when another "
    "attempt follows (the retry rate).", ["agent", "outcome"],
)  # fmt: skip
RETRIED = "Retried"


def attempt_outcome(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> str | None:
    """How an attempt ended with this write, or None if none did (pure)."""
    status = obj.get("status") or {}
    phase = patch.get("phase")
    if phase is None or phase == status.get("phase"):
        return None
    if not int(status.get("attempt") or patch.get("attempt") or 0):
        return None  # ended before any attempt (cancelled or timed out while queued)
    if phase == Phase.RETRYING:
        return RETRIED
    return phase if phase in TERMINAL else None


def finished(obj: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    """Count ``obj`` (the task before the write) ending with the status ``patch``, if the
    patch moves it into a terminal phase it was not already in; and the attempt that
    ended with it (into Retrying or a terminal phase)."""
    status = obj.get("status") or {}
    agent = status.get("agent") or patch.get("agent") or "none"
    outcome = attempt_outcome(obj, patch)
    if outcome is not None:
        ATTEMPTS.labels(agent, outcome).inc()
    phase = patch.get("phase")
    if phase is None or phase == status.get("phase"):
        return
    try:
        p = Phase(phase)
    except ValueError:
        return
    if p not in TERMINAL:
        return
    TASKS.labels(agent, p.value, patch.get("reason") or p.value).inc()
    created = parse_ts((obj.get("metadata") or {}).get("creationTimestamp"))
    started = parse_ts(patch.get("startTime") or status.get("startTime"))
    done = parse_ts(patch.get("completionTime"))
    if created and done:
        DURATION.labels(agent, p.value).observe(max((done - created).total_seconds(), 0.0))
    if started and done:
        EXECUTION.labels(agent, p.value).observe(max((done - started).total_seconds(), 0.0))
