"""The AgentTask state machine on callbacks, including 2,000 random event sequences."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wallestars_api.lifecycle import (
    CALLBACK_HISTORY,
    EVIDENCE_GRACE,
    TERMINAL,
    Phase,
    accepts_evidence,
    on_callback,
)
from wallestars_sdk.protocol import CallbackBody, NextAction

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def task(phase: str = "Dispatched", attempt: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "uid-1",
            "name": "t",
            "namespace": "ns",
            "creationTimestamp": "2026-11-25T11:59:00Z",
            "resourceVersion": "1",
        },
        "spec": {
            "retries": {
                "limit": 2,
                "backoffSeconds": 10,
                "factor": 2,
                "maxBackoffSeconds": 300,
                "jitter": 0,
            },
            **spec,
        },
        "status": {"phase": phase, "attempt": attempt, "dispatchTime": "2026-11-25T11:59:30Z"},
    }


def cb(status: str, attempt: int = 1, **kw: Any) -> CallbackBody:
    body = {
        "taskId": "uid-1",
        "agentId": "a",
        "task": {"namespace": "ns", "name": "t"},
        "attempt": attempt,
        "status": status,
        **kw,
    }
    return CallbackBody.model_validate_json(json.dumps(body))


def apply(obj: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON merge patch of status, as the API server applies it (null deletes)."""
    new = copy.deepcopy(obj)
    for k, v in (patch or {}).items():
        if v is None:
            new["status"].pop(k, None)
        else:
            new["status"][k] = v
    return new


def test_running_then_success() -> None:
    t = task()
    out = on_callback(t, cb("running", progress=20), "m1", NOW, 0.0)
    assert out.http_status == 200 and out.transition == ("Dispatched", "Running")
    t = apply(t, out.patch)
    assert t["status"]["progress"] == 20 and t["status"]["startTime"]
    out = on_callback(
        t, cb("success", results={"data": {"x": 1}}), "m2", NOW + timedelta(seconds=5), 0.0
    )
    t = apply(t, out.patch)
    s = t["status"]
    assert (s["phase"], s["progress"], s["result"], s["durationSeconds"]) == (
        "Succeeded",
        100,
        {"data": {"x": 1}},
        5.0,
    )
    assert s["attempts"][-1]["outcome"] == "Succeeded"
    assert [c["webhookId"] for c in s["callbacks"]] == ["m1", "m2"]
    assert {c["type"]: c["status"] for c in s["conditions"]} == {
        "Running": "False",
        "Succeeded": "True",
    }


def test_failure_retries_with_backoff_then_gives_up() -> None:
    t = task()
    out = on_callback(t, cb("failure", error={"code": "Boom", "message": "no"}), "m1", NOW, 0.0)
    assert out.next_action == NextAction.RETRY
    t = apply(t, out.patch)
    assert t["status"]["phase"] == "Retrying"
    assert t["status"]["nextAttemptTime"] == "2026-11-25T12:00:10Z"
    t["status"].update(phase="Dispatched", attempt=3)  # the operator's next attempts
    out = on_callback(t, cb("failure", attempt=3, error={"code": "Boom"}), "m3", NOW, 0.0)
    t = apply(t, out.patch)
    assert (t["status"]["phase"], t["status"]["reason"], out.next_action) == (
        "Failed",
        "RetriesExhausted",
        NextAction.ESCALATE,
    )


def test_non_retryable_fails_at_once() -> None:
    out = on_callback(
        task(), cb("failure", error={"code": "BadUrl", "retryable": False}), "m1", NOW, 0.0
    )
    assert (
        out.patch and out.patch["phase"] == "Failed" and out.patch["reason"] == "NonRetryableError"
    )


def test_deadline_cuts_the_retry_short() -> None:
    t = task(deadlineSeconds=65)  # created 11:59:00, so the deadline is 12:00:05
    out = on_callback(t, cb("failure", error={"code": "Boom"}), "m1", NOW, 0.0)
    assert (
        out.patch and out.patch["phase"] == "TimedOut" and out.patch["reason"] == "DeadlineExceeded"
    )


def test_refusals() -> None:
    assert on_callback(task(), cb("running", attempt=2), "m", NOW, 0).http_status == 409
    assert on_callback(task("Queued"), cb("running"), "m", NOW, 0).http_status == 409
    assert on_callback(task("Retrying"), cb("running"), "m", NOW, 0).http_status == 409
    assert on_callback(task("Succeeded"), cb("running"), "m", NOW, 0).http_status == 410
    other = task()
    other["metadata"]["uid"] = "uid-2"
    assert on_callback(other, cb("running"), "m", NOW, 0).http_status == 410
    cancelled = on_callback(task(cancel=True), cb("running"), "m", NOW, 0)
    assert (cancelled.http_status, cancelled.next_action, cancelled.patch) == (
        200,
        NextAction.CANCEL,
        None,
    )


def test_duplicate_id_changes_nothing() -> None:
    t = apply(task(), on_callback(task(), cb("running"), "m1", NOW, 0).patch)
    out = on_callback(t, cb("success"), "m1", NOW, 0)
    assert (out.http_status, out.verdict, out.patch) == (200, "duplicate", None)


events = st.lists(
    st.one_of(
        st.tuples(
            st.just("callback"),
            st.sampled_from(["running", "success", "failure", "partial"]),
            st.integers(-1, 1),  # attempt offset from the current one
            st.sampled_from([f"m{i}" for i in range(6)]),  # few ids, so repeats happen
            st.booleans(),  # retryable
            st.integers(0, 100),
        ),
        st.tuples(st.just("next-attempt")),
        st.tuples(st.just("cancel")),
    ),
    max_size=30,
)


@settings(max_examples=2000, deadline=None)
@given(events)
def test_random_event_sequences_keep_the_invariants(seq: list[tuple[Any, ...]]) -> None:
    t = task()
    terminal_transitions = 0
    now = NOW
    for ev in seq:
        now += timedelta(seconds=1)
        before = copy.deepcopy(t)
        phase = Phase(t["status"]["phase"])
        if ev[0] == "next-attempt":
            if phase == Phase.RETRYING:  # what the operator does at nextAttemptTime
                t["status"].update(phase="Dispatched", attempt=t["status"]["attempt"] + 1)
            continue
        if ev[0] == "cancel":
            t["spec"]["cancel"] = True
            continue
        _, status, offset, wid, retryable, progress = ev
        attempt = max(1, t["status"]["attempt"] + offset)
        extra: dict[str, Any] = {"progress": progress}
        if status == "failure":
            extra["error"] = {"code": "E", "retryable": retryable}
        out = on_callback(t, cb(status, attempt=attempt, **extra), wid, now, 0.5)
        seen = any(c["webhookId"] == wid for c in before["status"].get("callbacks", []))
        if phase in TERMINAL:
            assert out.patch is None and out.http_status in (200, 410)  # terminal is absorbing
        if seen:
            assert out.patch is None and out.verdict == "duplicate"  # a repeat changes nothing
        if out.http_status != 200:
            assert out.patch is None
        t = apply(t, out.patch)
        s = t["status"]
        assert 0 <= s.get("progress", 0) <= 100
        assert len(s.get("callbacks", [])) <= CALLBACK_HISTORY
        assert len({a["attempt"] for a in s.get("attempts", [])}) == len(s.get("attempts", []))
        if s["phase"] == "Retrying":
            assert s["nextAttemptTime"] and s["attempt"] <= 2  # limit 2: attempts 1 and 2 may retry
        if Phase(s["phase"]) in TERMINAL and phase not in TERMINAL:
            terminal_transitions += 1
            assert s["completionTime"]
        if s["phase"] == "Failed" and s.get("reason") == "RetriesExhausted":
            assert s["attempt"] == 3
    assert terminal_transitions <= 1


def test_a_cancelled_attempt_may_still_hand_in_its_evidence_for_a_while() -> None:
    t = task("Cancelled", cancel=True)
    t["status"]["completionTime"] = "2026-11-25T12:00:00Z"
    assert accepts_evidence(task("Running"), 1, NOW)
    assert not accepts_evidence(task("Running", attempt=2), 1, NOW)  # a stale attempt
    assert accepts_evidence(t, 1, NOW + EVIDENCE_GRACE)
    assert not accepts_evidence(t, 1, NOW + EVIDENCE_GRACE + timedelta(seconds=1))
    assert not accepts_evidence(task("Failed"), 1, NOW)

    art = {"name": "stopped-1.png", "uri": "/api/artifacts/x", "size": 3}
    body = cb("failure", error={"code": "Cancelled", "retryable": False},
              results={"artifacts": [art], "data": {"steps": []}})  # fmt: skip
    out = on_callback(t, body, "m1", NOW, 0)
    assert (out.http_status, out.verdict, out.next_action) == (
        200,
        "evidence-after-cancel",
        NextAction.CANCEL,
    )
    assert out.patch is not None and "phase" not in out.patch and out.transition is None
    assert out.patch["result"]["artifacts"][0]["name"] == "stopped-1.png"
    # Too late, or a mere progress report: nothing is written.
    late = on_callback(t, body, "m2", NOW + EVIDENCE_GRACE + timedelta(seconds=1), 0)
    assert (late.http_status, late.patch) == (410, None)
    assert on_callback(t, cb("running"), "m3", NOW, 0).patch is None


def test_evidence_sent_before_the_operator_wrote_cancelled_is_kept_too() -> None:
    t = task("Running", cancel=True)
    body = cb("failure", error={"code": "Cancelled", "retryable": False},
              results={"artifacts": [{"name": "trace.zip", "uri": "/x"}]})  # fmt: skip
    out = on_callback(t, body, "m1", NOW, 0)
    assert (out.verdict, out.next_action, out.transition) == (
        "evidence-after-cancel",
        NextAction.CANCEL,
        None,
    )
    assert out.patch is not None and "phase" not in out.patch
    progress = on_callback(t, cb("running", progress=50), "m2", NOW, 0)
    assert (progress.verdict, progress.next_action, progress.patch) == (
        "cancelled",
        NextAction.CANCEL,
        None,
    )


def test_each_attempts_log_is_linked_from_its_record_and_an_old_stack_is_dropped() -> None:
    """agent.log stays reachable per attempt after a retry replaces the result; a stack
    belongs to the failure that sent it, not to a later one without."""
    t = task(retries={"limit": 2, "backoffSeconds": 1})
    log1 = {"name": "agent.log", "uri": "/api/artifacts/ns/t/uid-1/1/agent.log", "size": 10}
    out = on_callback(t, cb("failure", error={"code": "Boom", "message": "no", "stack": "Trace\n at x"},
                            results={"artifacts": [log1]}), "m1", NOW, 0.0)  # fmt: skip
    t = apply(t, out.patch)
    assert t["status"]["phase"] == "Retrying"
    assert t["status"]["attempts"][0]["logs"] == log1["uri"]
    assert t["status"]["error"]["stack"] == "Trace\n at x"
    # Attempt 2 fails without a stack: the merge patch deletes the old one.
    t["status"] |= {"phase": "Running", "attempt": 2,
                    "attempts": [*t["status"]["attempts"], {"attempt": 2}]}  # fmt: skip
    out = on_callback(t, cb("failure", attempt=2, error={"code": "Boom2", "message": "again"}),
                      "m2", NOW, 0.0)  # fmt: skip
    assert out.patch is not None and out.patch["error"]["stack"] is None
    assert "logs" not in out.patch["attempts"][1]
    assert out.patch["attempts"][0]["logs"] == log1["uri"]  # attempt 1's, kept
