"""upkeep.decide: docs/operator.md's lifecycle table, row by row, without a cluster.

Each test names the row it covers. What the operator does on dispatch and waiting is
scheduling.plan's (tests/unit/test_scheduling.py); callbacks are the webhook service's
(tests/unit/test_lifecycle.py, test_callback_decisions.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from wallestars_api.lifecycle import Phase
from wallestars_operator.manifests import attempt_name
from wallestars_operator.upkeep import (
    JOB_REPAIR_SECONDS,
    REDELIVER_SECONDS,
    TIMEOUT_GRACE_SECONDS,
    DeleteTask,
    End,
    Facts,
    FailAttempt,
    Invoke,
    MakeAttemptObjects,
    ReadPod,
    Refusal,
    decide,
    needs_care,
)

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
UID = "0b6d1c3e-1111-2222-3333-444455556666"


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def task(phase: str | None = None, attempt: int = 0, dispatched_ago: float = 1.0,
         created_ago: float = 10.0, **spec: Any) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if attempt:
        status.update(attempt=attempt, agent="a", dispatchTime=ts(dispatched_ago))
    return {"metadata": {"name": "t", "namespace": "n", "uid": UID,
                         "creationTimestamp": ts(created_ago)},
            "spec": {"type": "screenshot", **spec}, "status": status}  # fmt: skip


def facts(browser: bool = True, **kw: Any) -> Facts:
    base: dict[str, Any] = dict(browser=browser, agent_known=True, job=None, pod=None,
                                invoked=False, refusal=None, callback_grace=5.0)  # fmt: skip
    return Facts(**{**base, **kw})


def job(condition: str | None, ended_ago: float = 10.0, reason: str = "") -> dict[str, Any]:
    conds = [{"type": condition, "status": "True", "reason": reason,
              "lastTransitionTime": ts(ended_ago)}] if condition else []  # fmt: skip
    return {"metadata": {"name": "j"}, "status": {"conditions": conds}}


def pod(exit_code: int, reason: str = "Error") -> dict[str, Any]:
    return {"status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": exit_code, "reason": reason}}}]}}  # fmt: skip


JOB = attempt_name("t", UID, 1)


# --- finished ---------------------------------------------------------------------------


def test_finished_ttl_passed_is_deleted() -> None:
    t = task("Succeeded", ttlSecondsAfterFinished=60)
    t["status"]["completionTime"] = ts(61)
    assert decide(t, facts(), NOW) == DeleteTask()
    t["status"]["completionTime"] = ts(59)
    assert decide(t, facts(), NOW) is None


@pytest.mark.parametrize(
    "phase", ["Succeeded", "Failed", "TimedOut", "Cancelled", "PartiallySucceeded"]
)
def test_finished_without_ttl_is_left_alone_even_if_cancelled(phase: str) -> None:
    assert decide(task(phase, attempt=1, cancel=True), facts(), NOW) is None


# --- cancel -----------------------------------------------------------------------------


def test_live_browser_attempt_cancelled_deletes_its_job() -> None:
    assert decide(task("Running", attempt=1, cancel=True), facts(), NOW) == End(
        Phase.CANCELLED, "Cancelled", "cancelled (spec.cancel is true)", JOB
    )


@pytest.mark.parametrize("phase", [None, "Queued", "Retrying"])
def test_waiting_task_cancelled_ends_without_a_job(phase: str | None) -> None:
    t = task(phase, attempt=1 if phase == "Retrying" else 0, cancel=True)
    action = decide(t, facts(), NOW)
    assert isinstance(action, End) and action.phase == Phase.CANCELLED
    assert action.delete_job is None


def test_cloud_attempt_cancelled_has_no_job_to_delete() -> None:
    action = decide(task("Dispatched", attempt=1, cancel=True), facts(browser=False), NOW)
    assert isinstance(action, End) and action.delete_job is None


# --- deadlines and timeouts ---------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "Queued", "Dispatched", "Running", "Retrying"])
def test_not_finished_past_its_deadline_times_out(phase: str | None) -> None:
    attempt = 0 if phase in (None, "Queued") else 1
    t = task(phase, attempt=attempt, created_ago=301, deadlineSeconds=300)
    action = decide(t, facts(), NOW)
    assert isinstance(action, End)
    assert (action.phase, action.reason) == (Phase.TIMED_OUT, "DeadlineExceeded")
    assert action.delete_job == (JOB if phase in ("Dispatched", "Running") else None)
    assert decide(task(phase, attempt=attempt, created_ago=299, deadlineSeconds=300),
                  facts(job=job(None)), NOW) is None  # fmt: skip


def test_queued_past_its_queue_timeout_times_out() -> None:
    t = task("Queued", queueTimeoutSeconds=30)
    t["status"]["queue"] = {"since": ts(31)}
    action = decide(t, facts(), NOW)
    assert isinstance(action, End) and action.reason == "QueueTimeout"
    t["status"]["queue"] = {"since": ts(29)}
    assert decide(t, facts(), NOW) is None


def test_new_task_queue_timeout_counts_from_creation() -> None:
    assert isinstance(decide(task(None, created_ago=31, queueTimeoutSeconds=30), facts(), NOW), End)


@pytest.mark.parametrize("browser", [True, False])
def test_attempt_past_its_timeout_fails_with_timeout(browser: bool) -> None:
    late = 300 + TIMEOUT_GRACE_SECONDS
    action = decide(task("Running", attempt=1, dispatched_ago=late), facts(browser), NOW)
    assert isinstance(action, FailAttempt)
    assert (action.code, action.retryable) == ("Timeout", True)
    assert action.delete_job == (JOB if browser else None)
    assert decide(task("Running", attempt=1, dispatched_ago=late - 1),
                  facts(browser, job=job(None), invoked=True), NOW) is None  # fmt: skip


# --- refused starts (DispatchFailed) ------------------------------------------------------


def test_refused_invocation_fails_the_attempt_at_once_with_the_providers_answer() -> None:
    r = Refusal(1, "DispatchFailed", "the function answered HTTP 401: no", True)
    action = decide(task("Dispatched", attempt=1, dispatched_ago=0.1),
                    facts(False, invoked=True, refusal=r), NOW)  # fmt: skip
    assert action == FailAttempt("DispatchFailed", "the function answered HTTP 401: no", True)


def test_refusal_of_an_earlier_attempt_is_ignored() -> None:
    r = Refusal(1, "DispatchFailed", "old", True)
    assert decide(task("Dispatched", attempt=2, dispatched_ago=0.1),
                  facts(False, invoked=True, refusal=r), NOW) is None  # fmt: skip


def test_refusal_whose_failure_already_landed_is_not_written_again() -> None:
    """The failure write landed (Retrying): nothing more, whatever the memory holds."""
    r = Refusal(1, "DispatchFailed", "x", True)
    assert decide(task("Retrying", attempt=1), facts(False, refusal=r), NOW) is None


def test_api_refusal_of_a_browser_attempts_job_fails_it_without_retry() -> None:
    r = Refusal(1, "DispatchFailed", "the API server refused the attempt's Job j: bad", False)
    action = decide(task("Dispatched", attempt=1), facts(True, refusal=r), NOW)
    assert isinstance(action, FailAttempt) and not action.retryable


def test_cancel_wins_over_a_refusal() -> None:
    r = Refusal(1, "DispatchFailed", "x", True)
    action = decide(task("Dispatched", attempt=1, cancel=True), facts(False, refusal=r), NOW)
    assert isinstance(action, End) and action.phase == Phase.CANCELLED


# --- cloud attempts after a crash ---------------------------------------------------------


def test_cloud_attempt_not_invoked_here_is_invoked_again_after_a_while() -> None:
    t = task("Dispatched", attempt=1, dispatched_ago=REDELIVER_SECONDS)
    assert decide(t, facts(False), NOW) == Invoke()
    assert decide(t, facts(False, invoked=True), NOW) is None
    assert decide(task("Dispatched", attempt=1, dispatched_ago=REDELIVER_SECONDS - 1),
                  facts(False), NOW) is None  # fmt: skip
    assert decide(t, facts(False, agent_known=False), NOW) is None


def test_cloud_attempt_that_called_back_is_not_invoked_again() -> None:
    t = task("Dispatched", attempt=1, dispatched_ago=60)
    t["status"]["callbacks"] = [{"attempt": 1, "verdict": "accepted"}]
    assert decide(t, facts(False), NOW) is None
    assert decide(task("Running", attempt=1, dispatched_ago=60), facts(False), NOW) is None


# --- browser attempts: the Job ------------------------------------------------------------


def test_live_browser_attempt_without_its_job_gets_it_after_the_repair_delay() -> None:
    assert decide(task("Dispatched", attempt=1, dispatched_ago=JOB_REPAIR_SECONDS + 0.5),
                  facts(), NOW) == MakeAttemptObjects()  # fmt: skip
    assert decide(task("Dispatched", attempt=1, dispatched_ago=1), facts(), NOW) is None


def test_job_running_needs_nothing() -> None:
    assert decide(task("Running", attempt=1), facts(job=job(None)), NOW) is None


def test_job_ended_without_a_callback_reads_its_pod_once() -> None:
    assert decide(task("Running", attempt=1), facts(job=job("Complete")), NOW) == ReadPod(JOB)


@pytest.mark.parametrize(("condition", "job_reason", "pod_", "code"), [
    ("Complete", "", pod(0, "Completed"), "CallbackMissing"),
    ("Failed", "BackoffLimitExceeded", pod(137, "OOMKilled"), "OOMKilled"),
    ("Failed", "DeadlineExceeded", pod(137), "Timeout"),
    ("Failed", "BackoffLimitExceeded", pod(137, "Error"), "CallbackMissing"),
])  # fmt: skip
def test_job_ended_without_a_result_fails_the_attempt_after_the_grace(
    condition: str, job_reason: str, pod_: dict[str, Any], code: str
) -> None:
    f = facts(job=job(condition, ended_ago=6, reason=job_reason), pod=pod_)
    action = decide(task("Running", attempt=1), f, NOW)
    assert isinstance(action, FailAttempt) and action.code == code
    assert (
        action.exit_code
        == pod_["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    )
    within = facts(job=job(condition, ended_ago=4, reason=job_reason), pod=pod_)
    assert decide(task("Running", attempt=1), within, NOW) is None  # a late callback may come


def test_evicted_pod_is_reported_as_evicted() -> None:
    evicted = {"status": {"reason": "Evicted", "containerStatuses": []}}
    action = decide(task("Running", attempt=1), facts(job=job("Failed"), pod=evicted), NOW)
    assert isinstance(action, FailAttempt) and action.code == "Evicted"


# --- needs_care agrees with decide ----------------------------------------------------------


@pytest.mark.parametrize("t", [
    task("Succeeded"), task("Queued"), task(None), task("Retrying", attempt=1),
])  # fmt: skip
def test_what_needs_no_care_gets_no_action(t: dict[str, Any]) -> None:
    assert not needs_care(t, NOW)
    assert decide(t, facts(), NOW) is None
