"""needs_care: which cached tasks a reconcile pass must look at (the rest cost nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from wallestars_operator.upkeep import needs_care

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def task(
    phase: str | None = None, completed_ago: float | None = None, **spec: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if completed_ago is not None:
        done = NOW - timedelta(seconds=completed_ago)
        status["completionTime"] = done.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": "t", "namespace": "n"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    "phase", ["Succeeded", "Failed", "TimedOut", "Cancelled", "PartiallySucceeded"]
)
def test_finished_task_without_ttl_is_left_alone(phase: str) -> None:
    assert not needs_care(task(phase, completed_ago=10_000), NOW)


def test_finished_task_matters_once_its_ttl_is_due() -> None:
    assert not needs_care(task("Succeeded", completed_ago=59, ttlSecondsAfterFinished=60), NOW)
    assert needs_care(task("Succeeded", completed_ago=60, ttlSecondsAfterFinished=60), NOW)


@pytest.mark.parametrize("phase", ["Dispatched", "Running"])
def test_live_attempts_always_matter(phase: str) -> None:
    assert needs_care(task(phase), NOW)


@pytest.mark.parametrize("phase", [None, "Queued", "Retrying"])
def test_waiting_task_matters_only_with_a_timer_or_cancel(phase: str | None) -> None:
    assert not needs_care(task(phase), NOW)
    assert needs_care(task(phase, cancel=True), NOW)
    assert needs_care(task(phase, deadlineSeconds=60), NOW)
    assert needs_care(task(phase, queueTimeoutSeconds=60), NOW)
