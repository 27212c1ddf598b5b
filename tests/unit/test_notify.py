"""Outbound notifications: transitions read from status, what is due, retry policy and
the messages, verified with the Standard Webhooks reference library (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from wallestars_api.lifecycle import ts
from wallestars_operator.notify import deliveries as d
from wallestars_operator.notify import messages
from wallestars_operator.notify.transitions import task_transitions, workflow_transitions

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
KEY = b"k" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def task(phase: str = "Succeeded", attempts: list[dict[str, Any]] | None = None,
         notify: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:  # fmt: skip
    return {"metadata": {"name": "t", "namespace": "ns", "uid": "u-1",
                         "creationTimestamp": "2026-12-03T11:59:00Z"},
            "spec": {"type": "screenshot", "notify": notify if notify is not None else
                     [{"url": "https://app.example/hook", "secretRef": {"name": "s"}}]},
            "status": {"phase": phase, "agent": "chromium", "attempt": len(attempts or []) or 1,
                       "attempts": attempts if attempts is not None else [
                           {"attempt": 1, "dispatchTime": "2026-12-03T11:59:01Z",
                            "startTime": "2026-12-03T11:59:02Z", "outcome": "Succeeded"}],
                       "completionTime": "2026-12-03T11:59:30Z", **status}}  # fmt: skip


def test_transitions_come_from_status_with_one_id_per_attempt() -> None:
    retried = task(attempts=[
        {"attempt": 1, "dispatchTime": "2026-12-03T11:59:01Z", "startTime": "2026-12-03T11:59:02Z",
         "outcome": "Failed", "completionTime": "2026-12-03T11:59:05Z"},
        {"attempt": 2, "dispatchTime": "2026-12-03T11:59:10Z", "startTime": "2026-12-03T11:59:11Z",
         "outcome": "Succeeded"}])  # fmt: skip
    assert [t.id for t in task_transitions(retried)] == [
        "Queued", "Dispatched#1", "Running#1", "Retrying#1", "Dispatched#2", "Running#2", "Succeeded"]  # fmt: skip
    waiting = task("Retrying", attempts=[{"attempt": 1, "outcome": "TimedOut",
                                          "completionTime": "2026-12-03T11:59:05Z"}])  # fmt: skip
    assert [t.id for t in task_transitions(waiting)] == ["Queued", "Retrying#1"]
    assert task_transitions({"metadata": {}, "status": {}}) == []
    wf = {"status": {"phase": "Failed", "startTime": "a", "completionTime": "b"}}
    assert [t.id for t in workflow_transitions(wf)] == ["Running", "Failed"]


def test_due_lists_each_listed_transition_until_delivered_or_given_up() -> None:
    t = task(notify=[{"url": "https://a/h", "secretRef": {"name": "s"}, "phases": ["Running", "Succeeded"]},
                     {"url": "https://b/h", "secretRef": {"name": "s"}}])  # fmt: skip
    due, nxt = d.due("AgentTask", t, None, {}, NOW, 86400)
    assert [(x.receiver.index, x.transition.id) for x in due] == [
        (0, "Running#1"),
        (0, "Succeeded"),
        (1, "Succeeded"),
    ]
    assert nxt is None
    delivered = {"receiver": 0, "transition": "Running#1", "deliveredTime": ts(NOW)}
    waiting = {"receiver": 0, "transition": "Succeeded", "attempts": 1,
               "nextAttemptTime": ts(NOW + timedelta(seconds=30))}  # fmt: skip
    recs = {(0, "Running#1"): delivered, (0, "Succeeded"): waiting}
    due, nxt = d.due("AgentTask", t, None, recs, NOW, 86400)
    assert [(x.receiver.index, x.transition.id) for x in due] == [(1, "Succeeded")]
    assert nxt == NOW + timedelta(seconds=30)
    assert not d.settled("AgentTask", t, None, recs)
    recs[(0, "Succeeded")] = {"gaveUpTime": ts(NOW)}
    recs[(1, "Succeeded")] = {"deliveredTime": ts(NOW)}
    assert d.settled("AgentTask", t, None, recs)
    # A transition older than the retry period that was never tried is not started.
    assert d.due("AgentTask", t, None, {}, NOW + timedelta(days=2), 86400)[0] == []


def test_the_sink_takes_the_listed_namespaces_only() -> None:
    sink = d.Sink("https://feed/h", "wallestars-system", "feed", "secret", frozenset({"ns"}))
    t = task(notify=[])
    [rc] = d.receivers(t, sink)
    assert rc.index == d.SINK and rc.secret_namespace == "wallestars-system"
    other = task(notify=[])
    other["metadata"]["namespace"] = "elsewhere"
    assert d.receivers(other, sink) == []
    assert len(d.receivers(other, d.Sink("https://feed/h", "x", "feed", "k", frozenset()))) == 1


def test_retries_back_off_with_jitter_and_give_up_after_the_period() -> None:
    rc = d.receivers(task(), None)[0]
    tr = task_transitions(task())[-1]
    rec = d.after(None, rc, tr, "ntf_x", d.Outcome(503, "busy"), NOW, 0.0, 86400)
    assert rec["attempts"] == 1 and rec["lastStatus"] == "503" and rec["lastError"] == "busy"
    assert rec["nextAttemptTime"] == ts(NOW + timedelta(seconds=0.5))
    for _ in range(11):
        rec = d.after(rec, rc, tr, "ntf_x", d.Outcome(None, "connection refused"), NOW, 1.0, 86400)
    assert rec["nextAttemptTime"] == ts(NOW + timedelta(seconds=2048))
    assert d.backoff(30, 1.0) == d.BACKOFF_CAP_SECONDS
    late = d.after(rec, rc, tr, "ntf_x", d.Outcome(500), NOW + timedelta(days=1), 1.0, 86400)
    assert "gaveUpTime" in late and "nextAttemptTime" not in late
    ok = d.after(rec, rc, tr, "ntf_x", d.Outcome(204), NOW, 0.5, 86400)
    assert ok["deliveredTime"] == ts(NOW) and "lastError" not in ok and ok["attempts"] == 13
    for out in (d.Outcome(None, "refused by the egress policy", True), d.Outcome(410)):
        assert "gaveUpTime" in d.after(None, rc, tr, "ntf_x", out, NOW, 0.5, 86400)


@given(st.integers(min_value=1, max_value=60), st.floats(min_value=0, max_value=1))
def test_backoff_is_between_half_and_all_of_its_doubling_and_capped(n: int, r: float) -> None:
    full = min(d.BACKOFF_CAP_SECONDS, 2.0 ** (n - 1))
    assert full / 2 <= d.backoff(n, r) <= full


def test_records_are_bounded_dropping_the_oldest_finished_first() -> None:
    recs = {(0, f"Running#{i}"): {"receiver": 0, "transition": f"Running#{i}",
                                  "firstAttemptTime": f"2026-12-03T11:{i:02d}:00Z",
                                  **({"deliveredTime": "x"} if i % 2 else {})} for i in range(70)}  # fmt: skip
    out = d.as_status(recs)
    assert len(out) == d.RECORD_LIMIT
    assert all(r["transition"] in {f"Running#{i}" for i in range(70) if i % 2 == 0} or
               int(r["transition"].split("#")[1]) >= 13 for r in out)  # fmt: skip


def test_a_standard_message_verifies_with_the_reference_library() -> None:
    t = task(result={"data": {"title": "Shop"}})
    tr = task_transitions(t)[-1]
    wid = messages.webhook_id("u-1", 0, tr.id)
    assert (
        wid
        == messages.webhook_id("u-1", 0, "Succeeded")
        != messages.webhook_id("u-1", 1, "Succeeded")
    )
    raw = messages.encode(messages.standard_body("AgentTask", t, tr))
    hdrs = messages.headers(
        "standard", KEY, wid, int(datetime.now(UTC).timestamp()), raw, "chromium"
    )
    body = Webhook(SECRET).verify(raw, hdrs)
    assert body["type"] == "agenttask.succeeded"
    assert body["data"] | {} == {"kind": "AgentTask", "namespace": "ns", "name": "t", "uid": "u-1",
                                 "phase": "Succeeded", "type": "screenshot", "attempt": 1,
                                 "agent": "chromium", "result": {"data": {"title": "Shop"}}}  # fmt: skip
    assert body["timestamp"] == "2026-12-03T11:59:30Z"


def test_a_plan_message_is_the_plans_body_with_its_own_headers_too() -> None:
    t = task("Failed", error={"code": "AssertionFailed", "message": "no"}, durationSeconds=4.5)
    tr = task_transitions(t)[-1]
    raw = messages.encode(messages.plan_body(t, tr))
    now = int(datetime.now(UTC).timestamp())
    hdrs = messages.headers("plan", KEY, "ntf_x", now, raw, "chromium")
    body = json.loads(raw)
    assert body == {"taskId": "u-1", "agentId": "chromium", "status": "failure",
                    "timestamp": "2026-12-03T11:59:30Z", "task": {"namespace": "ns", "name": "t"},
                    "attempt": 1, "duration": 4.5, "results": {},
                    "error": {"code": "AssertionFailed", "message": "no"}}  # fmt: skip
    assert (
        hdrs["x-agent-signature"]
        == hmac.new(KEY, str(now).encode() + raw, hashlib.sha256).hexdigest()
    )
    assert hdrs["x-agent-id"] == "chromium"
    Webhook(SECRET).verify(raw, hdrs)  # and Standard Webhooks' headers as well


async def test_a_pass_looks_at_what_changed_and_at_retries_fallen_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The notifier's pass (tick): an observed object's due delivery is queued once; a
    pass with nothing changed queues nothing; a waiting retry is queued when its time
    comes (the pass says when), not before."""
    from wallestars_operator.notify.sender import Notifier, NotifyConfig

    async def no_secret(*_: str) -> str | None:
        return None

    n = Notifier(None, no_secret, NotifyConfig())  # type: ignore[arg-type]  # tick never calls the API
    looked: list[str] = []
    real_due = d.due

    def counting_due(kind: str, obj: Any, *rest: Any) -> Any:
        looked.append(obj["metadata"]["name"])
        return real_due(kind, obj, *rest)

    monkeypatch.setattr(d, "due", counting_due)
    try:
        n.observe("AgentTask", {"type": "MODIFIED", "object": task()})
        assert n.tick(NOW) is None
        ((origin, r),) = n.receivers.items()
        assert origin == "https://app.example" and r.queue.qsize() == 1 and looked == ["t"]
        assert n.tick(NOW) is None and r.queue.qsize() == 1
        assert looked == ["t"]  # nothing changed: nothing looked at
        r.queue.get_nowait()
        n.inflight.clear()
        n.inflight_of.clear()
        # A failed first attempt, retried at NOW + 2 s.
        retry_at = NOW + timedelta(seconds=2)
        rec = {"receiver": 0, "transition": "Succeeded", "attempts": 1, "lastStatus": 500,
               "firstAttemptTime": ts(NOW), "nextAttemptTime": ts(retry_at)}  # fmt: skip
        n.observe("AgentTask", {"type": "MODIFIED", "object": task(notifications=[rec])})
        assert n.tick(NOW) == retry_at and r.queue.qsize() == 0
        assert n.tick(NOW + timedelta(seconds=1)) == retry_at and r.queue.qsize() == 0
        assert n.tick(retry_at) is None and r.queue.qsize() == 1
    finally:
        for w in r.workers:
            w.cancel()
