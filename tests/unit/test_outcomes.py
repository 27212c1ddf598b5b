"""How an attempt's Job ended: CallbackMissing, Timeout, OOMKilled, Evicted."""

from __future__ import annotations

from typing import Any

from wallestars_operator.outcomes import job_end


def job(kind: str | None, reason: str = "") -> dict[str, Any]:
    conds = (
        []
        if kind is None
        else [
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "lastTransitionTime": "2026-11-25T12:00:00Z",
            }
        ]
    )
    return {"status": {"conditions": conds}}


def pod(exit_code: int, reason: str = "Error", **status: Any) -> dict[str, Any]:
    return {
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "reason": reason}}}
            ],
            **status,
        }
    }


def test_running_job_has_no_end() -> None:
    assert job_end(job(None), None) is None


def test_completed_without_callback_is_callback_missing_with_exit_code() -> None:
    e = job_end(job("Complete"), pod(0, "Completed"))
    assert e is not None and (e.code, e.exit_code) == ("CallbackMissing", 0)
    e = job_end(job("Failed", "BackoffLimitExceeded"), pod(3))
    assert (
        e is not None and (e.code, e.exit_code) == ("CallbackMissing", 3) and "code 3" in e.message
    )


def test_deadline_oom_and_eviction_say_so() -> None:
    assert job_end(job("Failed", "DeadlineExceeded"), None).code == "Timeout"  # type: ignore[union-attr]
    assert job_end(job("Failed", "BackoffLimitExceeded"), pod(137, "OOMKilled")).code == "OOMKilled"  # type: ignore[union-attr]
    evicted = pod(137, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    assert job_end(job("Failed", "PodFailurePolicy"), evicted).code == "Evicted"  # type: ignore[union-attr]
