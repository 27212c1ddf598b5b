"""events.EventQueue keeps only what an Event needs of its object while it waits."""

from __future__ import annotations

from typing import Any

from wallestars_api.events import EventQueue, reference


def big_task() -> dict[str, Any]:
    return {
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "n", "uid": "u1", "resourceVersion": "7",
                     "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {f"f:{i}": {} for i in range(500)}}}]},
        "spec": {"payload": {"data": "x" * 100_000}},
        "status": {"phase": "Dispatched", "conditions": [{"type": "Scheduled"}] * 10},
    }  # fmt: skip


async def no_send(*_: Any) -> None:
    raise AssertionError("not sent in this test")


def test_a_queued_event_holds_the_reference_not_the_object() -> None:
    q = EventQueue(no_send, size=10)
    q.post(big_task(), "Dispatched", "attempt 1", False)
    ref, reason, message, warning = q.queue.get_nowait()
    assert ref == {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                   "name": "t", "namespace": "n", "uid": "u1"}  # fmt: skip
    assert (reason, message, warning) == ("Dispatched", "attempt 1", False)


def test_reference_defaults_to_an_agenttask() -> None:
    obj = {"metadata": {"name": "t", "namespace": "n", "uid": "u"}}
    assert reference(obj)["kind"] == "AgentTask"
    assert reference(obj)["apiVersion"] == "agents.wallestars.io/v1alpha1"
