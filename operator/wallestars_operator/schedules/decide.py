"""One pass over one AgentSchedule: the run that is due (if any), what to cancel and
delete, and its status (pure). CronJob's rules: after downtime only the most recent
missed time runs (at most one catch-up), and not if it is past startingDeadlineSeconds;
Forbid skips a run while the previous one is active, Replace cancels it first.

A run's name is a function of (schedule, scheduled time), so a pass repeated after a
crash creates nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import TERMINAL, parse_ts, ts
from wallestars_api.resources import API_VERSION, GROUP
from wallestars_sdk import secrets as task_secrets

from wallestars_operator.schedules.cron import Cron, Every, ScheduleError, parse

SCHEDULE_LABEL = f"{GROUP}/schedule"
SCHEDULED_AT = f"{GROUP}/scheduled-time"
KIND = "AgentSchedule"
SUCCEEDED = frozenset({"Succeeded", "PartiallySucceeded"})
WORKFLOW_DONE = frozenset({"Succeeded", "Failed", "Cancelled"})
MAX_MISSED = 100_000  # times stepped through after a downtime, at most


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    cancel: list[Mapping[str, Any]] = field(default_factory=list)  # active runs (Replace)
    delete: list[Mapping[str, Any]] = field(default_factory=list)  # runs beyond the history limits
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, bool]] = field(default_factory=list)


def run_kind(spec: Mapping[str, Any]) -> str:
    return "AgentWorkflow" if "workflowTemplate" in spec else "AgentTask"


def finished(run: Mapping[str, Any]) -> bool:
    phase = (run.get("status") or {}).get("phase")
    return phase in (WORKFLOW_DONE if run.get("kind") == "AgentWorkflow" else TERMINAL)


def succeeded(run: Mapping[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") in SUCCEEDED


def scheduled_time(run: Mapping[str, Any]) -> str:
    return str(((run["metadata"].get("annotations") or {}).get(SCHEDULED_AT)) or
               run["metadata"].get("creationTimestamp", ""))  # fmt: skip


def run_name(schedule: str, when: datetime, every: bool) -> str:
    """Unique per scheduled time: minutes for cron (as CronJob), seconds for @every."""
    stamp = int(when.timestamp()) if every else int(when.timestamp() // 60)
    return f"{schedule[:40].rstrip('-.')}-{stamp}"


def latest_due(
    s: Cron | Every, last: datetime, now: datetime, anchor: datetime
) -> tuple[datetime | None, int]:
    """The most recent scheduled time in (last, now], and how many there were."""
    if isinstance(s, Every):
        if now < anchor:
            return None, 0
        k = int((now - anchor) / s.period)
        at = anchor + k * s.period
        if at <= last:
            return None, 0
        first = s.next_after(last, anchor)
        return at, int((at - first) / s.period) + 1
    due: datetime | None = None
    n, t = 0, last
    while n < MAX_MISSED:
        t = s.next_after(t)
        if t > now:
            break
        due, n = t, n + 1
    return due, n


def manifest(sched: Mapping[str, Any], when: datetime, every: bool) -> dict[str, Any]:
    meta, spec = sched["metadata"], sched.get("spec") or {}
    kind = run_kind(spec)
    template = spec["workflowTemplate" if kind == "AgentWorkflow" else "taskTemplate"]
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": run_name(meta["name"], when, every),
            "namespace": meta["namespace"],
            "labels": {**(tmeta.get("labels") or {}), SCHEDULE_LABEL: meta["name"][:63].rstrip("-._")},
            "annotations": {**(tmeta.get("annotations") or {}), SCHEDULED_AT: ts(when)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": dict(template.get("spec") or {}),
    }  # fmt: skip


def template_problem(spec: Mapping[str, Any]) -> str | None:
    if ("taskTemplate" in spec) == ("workflowTemplate" in spec):
        return "set exactly one of spec.taskTemplate or spec.workflowTemplate"
    task = (spec.get("taskTemplate") or {}).get("spec") or {}
    if refs := task_secrets.references(task.get("payload") or {}):
        return (f"spec.taskTemplate.spec.payload names Secret {refs[0][0]}: Secrets by reference "
                "are not supported in schedules (the operator would create the task)")  # fmt: skip
    return None


def decide(sched: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], now: datetime) -> Plan:
    """``runs``: the tasks or workflows this schedule created that still exist."""
    meta, spec = sched["metadata"], sched.get("spec") or {}
    old = dict(sched.get("status") or {})
    status = dict(old)
    plan = Plan(status=status)
    status["observedGeneration"] = meta.get("generation", 0)
    try:
        s = parse(str(spec.get("schedule", "")), spec.get("timeZone"))
        problem = template_problem(spec)
    except ScheduleError as e:
        s, problem = None, str(e)
    if s is None or problem:
        if old.get("message") != problem:
            plan.events.append(("InvalidSchedule", str(problem), True))
        status.update(reason="InvalidSchedule", message=str(problem), active=[])
        status.pop("nextScheduleTime", None)
        return plan
    every = isinstance(s, Every)
    created = parse_ts(meta.get("creationTimestamp")) or now
    last = parse_ts(old.get("lastScheduleTime")) or created
    active = sorted((r for r in runs if not finished(r)), key=scheduled_time)
    done = sorted((r for r in runs if finished(r)), key=scheduled_time)

    due, missed = latest_due(s, last, now, created)
    if due is not None and not spec.get("suspend"):
        deadline = spec.get("startingDeadlineSeconds")
        if missed > 1:
            plan.events.append(("MissedSchedules", f"{missed - 1} scheduled times passed while "
                                "the operator was away; only the latest runs", True))  # fmt: skip
        name = run_name(meta["name"], due, every)
        if deadline is not None and now - due > timedelta(seconds=deadline):
            plan.events.append(("MissedSchedule", f"{ts(due)} is past startingDeadlineSeconds "
                                f"({deadline}); not run", True))  # fmt: skip
        elif spec.get("concurrencyPolicy") == "Forbid" and active:
            plan.events.append(("Skipped", f"{ts(due)}: {active[-1]['metadata']['name']} is still "
                                "running (concurrencyPolicy Forbid)", False))  # fmt: skip
            status["skipped"] = int(old.get("skipped", 0)) + 1
        else:
            if spec.get("concurrencyPolicy") == "Replace" and active:
                plan.cancel = list(active)
                plan.events.append(("Replaced", f"cancelled {', '.join(r['metadata']['name'] for r in active)}",
                                    False))  # fmt: skip
            plan.create.append(manifest(sched, due, every))
            plan.events.append(
                ("Scheduled", f"{plan.create[0]['kind']} {name} for {ts(due)}", False)
            )
        status["lastScheduleTime"] = ts(due)
    elif due is not None:  # suspended: the time passes without a run, as CronJob
        status["lastScheduleTime"] = ts(due)

    # History: the newest successful and failed runs are kept, the older ones deleted.
    ok = [r for r in done if succeeded(r)]
    bad = [r for r in done if not succeeded(r)]
    keep_ok = int(spec.get("successfulHistoryLimit", 3))
    keep_bad = int(spec.get("failedHistoryLimit", 1))
    plan.delete = ok[: max(0, len(ok) - keep_ok)] + bad[: max(0, len(bad) - keep_bad)]
    if ok:
        last_ok = ok[-1].get("status") or {}
        status["lastSuccessfulTime"] = last_ok.get("completionTime") or scheduled_time(ok[-1])
    base = max(now, parse_ts(status.get("lastScheduleTime")) or created)
    nxt = s.next_after(base, created) if isinstance(s, Every) else s.next_after(base)
    status["nextScheduleTime"] = ts(nxt.astimezone(UTC))
    status["active"] = [r["metadata"]["name"] for r in active if r not in plan.cancel] + [
        c["metadata"]["name"] for c in plan.create
    ]
    status.update(reason="Suspended" if spec.get("suspend") else "Scheduled",
                  message=f"next run at {status['nextScheduleTime']}")  # fmt: skip
    return plan
