"""AgentSchedules: cron and @every, and CronJob's rules for what runs when (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wallestars_operator.schedules.cron import Cron, Every, ScheduleError, parse
from wallestars_operator.schedules.decide import SCHEDULE_LABEL, SCHEDULED_AT, decide, run_name

T0 = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)  # a Thursday


def nxt(expr: str, after: datetime, tz: str | None = None) -> datetime:
    s = parse(expr, tz)
    assert isinstance(s, Cron)
    return s.next_after(after)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [("* * * * *", "2026-12-03T12:01"), ("*/15 * * * *", "2026-12-03T12:15"),
     ("0 9 * * *", "2026-12-04T09:00"), ("30 8 * * mon-fri", "2026-12-04T08:30"),
     ("0 0 1 jan *", "2027-01-01T00:00"), ("0 12 * * sun", "2026-12-06T12:00"),
     ("0 12 * * 7", "2026-12-06T12:00"), ("5,10 13-14 * * *", "2026-12-03T13:05"),
     ("@hourly", "2026-12-03T13:00"), ("@weekly", "2026-12-06T00:00"),
     ("0 0 29 2 *", "2028-02-29T00:00"),
     # Both day fields restricted: either matches (the 13th, or any Friday).
     ("0 0 13 * fri", "2026-12-04T00:00")],
)  # fmt: skip
def test_cron_next_times(expr: str, expected: str) -> None:
    assert nxt(expr, T0).strftime("%Y-%m-%dT%H:%M") == expected


def test_a_time_zone_moves_the_wall_clock_not_the_rule() -> None:
    # 09:00 in Sofia (UTC+2 in winter) is 07:00 UTC.
    assert nxt("0 9 * * *", T0, "Europe/Sofia") == datetime(2026, 12, 4, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "message"),
    [("* * * *", "has 4 fields"), ("61 * * * *", "minute '61' is outside 0-59"),
     ("* * * foo *", "month 'foo' is not a number"), ("*/0 * * * *", "outside"),
     ("@every 1s", "at least every 5s"), ("@every soon", "a duration like 30s")],
)  # fmt: skip
def test_bad_schedules_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as e:
        parse(expr)
    assert message in str(e.value)
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse("* * * * *", "Mars/Olympus")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["*/7 * * * *", "0 */3 * * *", "15 10 * * 1-5", "0 0 1,15 * *", "@daily"]),
       st.integers(0, 10**7))  # fmt: skip
def test_the_next_time_matches_and_nothing_between_does(expr: str, offset: int) -> None:
    s = parse(expr)
    assert isinstance(s, Cron)
    after = T0 + timedelta(minutes=offset)
    t = s.next_after(after)
    assert t > after and t.second == 0

    def matches(x: datetime) -> bool:
        return (x.minute in s.minutes and x.hour in s.hours and x.month in s.months
                and s.day_matches(x))  # fmt: skip

    assert matches(t)
    probe = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    for _ in range(min(2000, int((t - probe).total_seconds() // 60))):  # a stretch before it
        assert not matches(probe)
        probe += timedelta(minutes=1)


def test_every_is_anchored_at_creation() -> None:
    e = parse("@every 1m30s")
    assert isinstance(e, Every) and e.period == timedelta(seconds=90)
    assert e.next_after(T0 + timedelta(seconds=100), T0) == T0 + timedelta(seconds=180)


def sched(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nightly", "namespace": "ns", "uid": "s-uid", "generation": 1,
                         "creationTimestamp": "2026-12-03T12:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "taskTemplate": {"spec": {"agentRef": "fn", "type": "custom",
                                                                         "payload": {}}}, **spec},
            "status": {}}  # fmt: skip


def run(name: str, phase: str | None, at: str, kind: str = "AgentTask") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "annotations": {SCHEDULED_AT: at}},
            "status": {"phase": phase} if phase else {}}  # fmt: skip


def test_a_due_run_is_created_once_with_its_name_from_the_time() -> None:
    now = datetime(2026, 12, 3, 12, 5, 2, tzinfo=UTC)
    p = decide(sched(), [], now)
    (t,) = p.create
    due = datetime(2026, 12, 3, 12, 5, tzinfo=UTC)
    assert (
        t["metadata"]["name"]
        == run_name("nightly", due, False)
        == f"nightly-{int(due.timestamp() // 60)}"
    )
    assert t["metadata"]["labels"][SCHEDULE_LABEL] == "nightly"
    assert t["metadata"]["annotations"][SCHEDULED_AT] == "2026-12-03T12:05:00Z"
    assert t["metadata"]["ownerReferences"][0]["kind"] == "AgentSchedule"
    assert p.status["lastScheduleTime"] == "2026-12-03T12:05:00Z"
    assert p.status["nextScheduleTime"] == "2026-12-03T12:10:00Z"
    assert p.status["active"] == [t["metadata"]["name"]]
    s = sched()
    s["status"] = p.status
    assert decide(s, [run(t["metadata"]["name"], None, "2026-12-03T12:05:00Z")], now).create == []


def test_after_downtime_only_the_latest_missed_time_runs_and_not_past_the_deadline() -> None:
    s = sched()
    s["status"] = {"lastScheduleTime": "2026-12-03T12:05:00Z"}
    now = datetime(2026, 12, 3, 13, 2, tzinfo=UTC)  # 11 times missed
    p = decide(s, [], now)
    assert [c["metadata"]["annotations"][SCHEDULED_AT] for c in p.create] == [
        "2026-12-03T13:00:00Z"
    ]
    assert any(
        e[0] == "MissedSchedules" and e[1].startswith("10 scheduled times") for e in p.events
    )
    p = decide(sched(startingDeadlineSeconds=60) | {"status": s["status"]}, [], now)
    assert p.create == [] and p.status["lastScheduleTime"] == "2026-12-03T13:00:00Z"
    assert any(e[0] == "MissedSchedule" for e in p.events)


def test_forbid_skips_while_one_runs_and_replace_cancels_it() -> None:
    now = datetime(2026, 12, 3, 12, 10, 1, tzinfo=UTC)
    s = sched(concurrencyPolicy="Forbid")
    s["status"] = {"lastScheduleTime": "2026-12-03T12:05:00Z"}
    busy = [run("nightly-1", "Running", "2026-12-03T12:05:00Z")]
    p = decide(s, busy, now)
    assert p.create == [] and p.status["skipped"] == 1
    assert p.status["lastScheduleTime"] == "2026-12-03T12:10:00Z"  # the skipped time is spent
    assert any(e[0] == "Skipped" and "nightly-1 is still running" in e[1] for e in p.events)
    s["spec"]["concurrencyPolicy"] = "Replace"
    p = decide(s, busy, now)
    assert [r["metadata"]["name"] for r in p.cancel] == ["nightly-1"] and len(p.create) == 1
    s["spec"]["concurrencyPolicy"] = "Allow"
    assert len(decide(s, busy, now).create) == 1 and decide(s, busy, now).cancel == []


def test_history_keeps_the_newest_runs_of_each_outcome() -> None:
    runs = [run(f"r{i}", "Succeeded", f"2026-12-03T1{i}:00:00Z") for i in range(5)]
    runs += [run(f"f{i}", "Failed", f"2026-12-03T1{i}:30:00Z") for i in range(3)]
    p = decide(sched(successfulHistoryLimit=2, failedHistoryLimit=1), runs,
               datetime(2026, 12, 3, 12, 3, tzinfo=UTC))  # fmt: skip
    assert sorted(r["metadata"]["name"] for r in p.delete) == ["f0", "f1", "r0", "r1", "r2"]


def test_suspend_and_bad_schedules_create_nothing() -> None:
    now = datetime(2026, 12, 3, 12, 5, 2, tzinfo=UTC)
    p = decide(sched(suspend=True), [], now)
    assert p.create == [] and p.status["lastScheduleTime"] == "2026-12-03T12:05:00Z"
    p = decide(sched(schedule="*/5 * * *"), [], now)
    assert (
        p.create == []
        and p.status["reason"] == "InvalidSchedule"
        and "has 4 fields" in p.status["message"]
    )
    bad = sched()
    bad["spec"]["taskTemplate"]["spec"]["payload"] = {
        "headersFrom": {"A": {"secretKeyRef": {"name": "s", "key": "k"}}}
    }
    assert "names Secret s" in decide(bad, [], now).status["message"]


def test_a_workflow_template_schedules_workflows_every_few_seconds() -> None:
    s = sched(schedule="@every 30s")
    del s["spec"]["taskTemplate"]
    s["spec"]["workflowTemplate"] = {
        "spec": {"steps": [{"name": "a", "template": {"agentRef": "fn", "type": "x"}}]}
    }
    p = decide(s, [], datetime(2026, 12, 3, 12, 1, 5, tzinfo=UTC))
    (w,) = p.create
    assert (
        w["kind"] == "AgentWorkflow"
        and w["metadata"]["annotations"][SCHEDULED_AT] == "2026-12-03T12:01:00Z"
    )
    assert (
        w["metadata"]["name"]
        == f"nightly-{int(datetime(2026, 12, 3, 12, 1, tzinfo=UTC).timestamp())}"
    )
    assert p.status["nextScheduleTime"] == "2026-12-03T12:01:30Z"
