"""Task metrics both components count with one implementation: outcomes, attempts (the
retry rate) and execution time, from the write that makes each transition."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from wallestars_api import taskmetrics
from wallestars_api.taskmetrics import RETRIED, attempt_outcome


def task(phase: str, attempt: int = 1, **status: Any) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": "2026-12-03T10:00:00Z"},
            "status": {"phase": phase, "attempt": attempt, "agent": "metrics-agent", **status}}  # fmt: skip


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_attempt_ends_into_a_retry_or_a_terminal_phase() -> None:
    assert attempt_outcome(task("Running"), {"phase": "Retrying"}) == RETRIED
    assert attempt_outcome(task("Running"), {"phase": "Succeeded"}) == "Succeeded"
    assert attempt_outcome(task("Dispatched"), {"phase": "TimedOut"}) == "TimedOut"
    assert attempt_outcome(task("Running"), {"phase": "Running", "progress": 5}) is None
    assert attempt_outcome(task("Running"), {"progress": 5}) is None  # no transition
    # Cancelled or timed out while queued: no attempt ever ran, none ended.
    assert attempt_outcome(task("Queued", attempt=0), {"phase": "Cancelled"}) is None


def test_counted_once_per_transition_with_execution_from_first_start() -> None:
    before_retry = value(
        "wallestars_agenttask_attempts_total", agent="metrics-agent", outcome=RETRIED
    )
    before_ok = value(
        "wallestars_agenttask_attempts_total", agent="metrics-agent", outcome="Succeeded"
    )
    before_exec = value(
        "wallestars_agenttask_execution_seconds_sum", agent="metrics-agent", phase="Succeeded"
    )
    taskmetrics.finished(task("Running"), {"phase": "Retrying"})
    taskmetrics.finished(task("Retrying", attempt=1), {"phase": "Dispatched", "attempt": 2})
    done = {"phase": "Succeeded", "completionTime": "2026-12-03T10:01:40Z"}
    taskmetrics.finished(task("Running", attempt=2, startTime="2026-12-03T10:00:10Z"), done)
    assert (
        value("wallestars_agenttask_attempts_total", agent="metrics-agent", outcome=RETRIED)
        == before_retry + 1
    )
    assert (
        value("wallestars_agenttask_attempts_total", agent="metrics-agent", outcome="Succeeded")
        == before_ok + 1
    )
    # 10:00:10 (first running report) to 10:01:40: 90 s, not the 100 s since creation.
    assert value("wallestars_agenttask_execution_seconds_sum", agent="metrics-agent",
                 phase="Succeeded") == before_exec + 90  # fmt: skip
