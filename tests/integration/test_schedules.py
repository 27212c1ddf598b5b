"""AgentSchedules end to end: the real control plane, the operator and webhook service as
processes, the test cloud function on loopback (its `slow` behaviour calls back after 8 s)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import pytest
from harness import Kubectl, OperatorProcess, events, http_agent, wait_for

pytestmark = pytest.mark.cluster
SCHED = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentSchedule"}


def task_template(behaviour: str = "succeed") -> dict[str, Any]:
    return {"spec": {"agentRef": "fn", "type": "custom", "retries": {"limit": 0},
                     "payload": {"data": {"behaviour": behaviour}}}}  # fmt: skip


def runs(kubectl: Kubectl, kind: str, name: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", kind, "-l", f"agents.wallestars.io/schedule={name}")["items"]
    return sorted(
        items, key=lambda o: o["metadata"]["annotations"]["agents.wallestars.io/scheduled-time"]
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_forbid_skips_a_run_while_the_previous_one_runs(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    """Every 5 s a run that takes 8 s: with Forbid the time after a run's start is skipped
    while it runs, so runs are at least 10 s apart and skips are counted and announced."""
    http_agent(kubectl, function_url)
    kubectl.apply({**SCHED, "metadata": {"name": "slow"}, "spec": {
        "schedule": "@every 5s", "concurrencyPolicy": "Forbid", "successfulHistoryLimit": 10,
        "taskTemplate": task_template("slow")}})  # fmt: skip
    wait_for("three runs", lambda: len(runs(kubectl, "agenttasks", "slow")) >= 3, timeout=60)
    kubectl.apply({**SCHED, "metadata": {"name": "slow"}, "spec": {
        "schedule": "@every 5s", "concurrencyPolicy": "Forbid", "successfulHistoryLimit": 10,
        "suspend": True, "taskTemplate": task_template("slow")}})  # fmt: skip
    got = runs(kubectl, "agenttasks", "slow")
    times = [at(t["metadata"]["annotations"]["agents.wallestars.io/scheduled-time"]) for t in got]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(g >= 10 for g in gaps[:2]), gaps  # a 5 s time skipped between each
    assert all(g % 5 == 0 for g in gaps), gaps  # on the schedule's grid
    # Never two at once: each run started after the previous one finished.
    wait_for("the runs to finish", lambda: all((t.get("status") or {}).get("phase") == "Succeeded"
             for t in kubectl.json("get", "agenttasks", "-l", "agents.wallestars.io/schedule=slow")["items"][:3]),
             timeout=40)  # fmt: skip
    st = kubectl.json("get", "agentschedule", "slow")["status"]
    assert st["skipped"] >= 2 and st["reason"] == "Suspended"
    assert "Skipped" in events(kubectl, "slow", kind="AgentSchedule")
    for t in got:
        (ref,) = t["metadata"]["ownerReferences"]
        assert ref["kind"] == "AgentSchedule" and ref["name"] == "slow"


def test_a_schedule_of_workflows_keeps_its_history(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    wf = {"spec": {"steps": [{"name": "a", "template": {"agentRef": "fn", "type": "custom",
                                                        "payload": {"data": {"out": 1}}}},
                             {"name": "b", "dependsOn": ["a"], "template": {
                                 "agentRef": "fn", "type": "custom",
                                 "payload": {"data": {"out": "{{ steps.a.result.data.out }}"}}}}]}}  # fmt: skip
    kubectl.apply({**SCHED, "metadata": {"name": "wf"}, "spec": {
        "schedule": "@every 5s", "successfulHistoryLimit": 2, "workflowTemplate": wf}})  # fmt: skip
    wait_for("four runs scheduled", lambda: (kubectl.json("get", "agentschedule", "wf").get("status") or {})
             .get("lastScheduleTime") and len(events(kubectl, "wf", kind="AgentSchedule")) >= 4, timeout=60)  # fmt: skip
    wait_for("history trimmed to 2", lambda: len([w for w in runs(kubectl, "agentworkflows", "wf")
             if (w.get("status") or {}).get("phase") == "Succeeded"]) == 2, timeout=30)  # fmt: skip
    st = kubectl.json("get", "agentschedule", "wf")["status"]
    assert st["lastSuccessfulTime"] and at(st["nextScheduleTime"]) > at(st["lastScheduleTime"])
    columns = kubectl("get", "agentschedule", "wf")
    assert "@every 5s" in columns and "NEXT" in columns


def test_the_api_server_refuses_a_schedule_with_two_templates(kubectl: Kubectl) -> None:
    out = kubectl.run("apply", "-f", "-", check=False, input=json.dumps({
        **SCHED, "metadata": {"name": "two"}, "spec": {"schedule": "* * * * *",
        "taskTemplate": task_template(), "workflowTemplate": {"spec": {}}}}))  # fmt: skip
    assert (
        out.returncode != 0
        and "set exactly one of spec.taskTemplate or spec.workflowTemplate" in out.stderr
    )
