"""What the operator's caches keep of an object (state.slim) and the rv guard."""

from __future__ import annotations

from typing import Any

from wallestars_api.objects import LAST_APPLIED
from wallestars_operator.state import State, slim


def task(phase: str | None, rv: str = "5") -> dict[str, Any]:
    return {
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "n", "uid": "u1", "resourceVersion": rv,
                     "creationTimestamp": "2026-11-25T12:00:00Z",
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                     "annotations": {LAST_APPLIED: "{...}", "keep": "me"}},
        "spec": {"agentRef": "a", "payload": {"data": "x" * 1000}, "ttlSecondsAfterFinished": 60},
        "status": {"phase": phase, "agent": "a", "attempt": 1, "completionTime": "2026-11-25T12:00:09Z",
                   "durationSeconds": 9.0, "result": {"data": "y" * 1000}, "attempts": [{"n": 1}]},
    }  # fmt: skip


def test_live_objects_lose_managed_fields_and_last_applied_only() -> None:
    s = slim("tasks", task("Dispatched"))
    assert "managedFields" not in s["metadata"]
    assert s["metadata"]["annotations"] == {"keep": "me"}
    assert s["spec"]["payload"] == {"data": "x" * 1000}
    assert s["status"]["result"] == {"data": "y" * 1000}


def test_finished_task_keeps_what_ttl_and_agent_statistics_read() -> None:
    s = slim("tasks", task("Succeeded"))
    assert s == {
        "metadata": {"name": "t", "namespace": "n", "uid": "u1", "resourceVersion": "5",
                     "creationTimestamp": "2026-11-25T12:00:00Z"},
        "spec": {"ttlSecondsAfterFinished": 60},
        "status": {"phase": "Succeeded", "agent": "a", "completionTime": "2026-11-25T12:00:09Z",
                   "durationSeconds": 9.0, "attempt": 1},
    }  # fmt: skip


def test_the_source_object_is_not_modified() -> None:
    obj = task("Dispatched")
    slim("tasks", obj)
    assert "managedFields" in obj["metadata"] and LAST_APPLIED in obj["metadata"]["annotations"]


def test_an_older_resource_version_never_overwrites_a_newer_one() -> None:
    st = State()
    st.put("tasks", task("Succeeded", rv="9"))
    st.put("tasks", task("Dispatched", rv="7"))
    assert st.tasks[("n", "t")]["status"]["phase"] == "Succeeded"


def test_the_pass_index_follows_each_task_phase_and_ttl() -> None:
    st = State()
    st.put("tasks", task("Dispatched", rv="1"))
    assert st.live == {("n", "t")} and st.expiry == {}
    st.put("tasks", task("Succeeded", rv="2"))  # ttlSecondsAfterFinished 60, finished 12:00:09
    assert st.live == set()
    assert st.expiry[("n", "t")].isoformat() == "2026-11-25T12:01:09+00:00"
    no_ttl = task("Failed", rv="3")
    del no_ttl["spec"]["ttlSecondsAfterFinished"]
    st.put("tasks", no_ttl)
    assert st.live == set() and st.expiry == {}  # never due: a pass never looks at it
    st.remove("tasks", no_ttl)
    assert st.live == set() and st.expiry == {} and st.tasks == {}
