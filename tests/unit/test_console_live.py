"""The pure parts of the console's live updates: which events a change makes, what a new
stream is told first, and how a stream that falls behind is ended."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from wallestars_console import live


def task(
    name: str, phase: str = "Running", progress: int = 0, created: str = "2026-12-03T10:00:00Z"
) -> dict[str, Any]:
    return {
        "id": f"uid-{name}",
        "name": name,
        "status": phase,
        "progress": progress,
        "createdAt": created,
    }


def test_a_change_the_plan_does_not_show_makes_no_event() -> None:
    assert live.events_for("task", task("a", progress=5), task("a", progress=5)) == []


def test_an_update_then_complete_once_on_the_way_into_a_terminal_phase() -> None:
    (up,) = live.events_for("task", task("a"), task("a", progress=50))
    assert (up.name, up.kind, up.data["progress"]) == ("task:update", "task", 50)
    done = live.events_for("task", task("a", progress=50), task("a", "Succeeded", 100))
    assert [e.name for e in done] == ["task:update", "task:uid-a:complete"]
    # A later change of a finished task (its result written, say) completes nothing again.
    again = live.events_for(
        "task", task("a", "Succeeded", 100), {**task("a", "Succeeded", 100), "reason": "x"}
    )
    assert [e.name for e in again] == ["task:update"]


def test_an_agent_change_is_agent_status() -> None:
    (ev,) = live.events_for("agent", None, {"name": "b", "activeTasks": 1})
    assert (ev.name, ev.kind) == ("agent:status", "agent")


def test_events_are_encoded_once_in_both_wire_forms() -> None:
    ev = live.Event.of("task:update", "task", task("a", progress=7))
    assert json.loads(ev.ws_text()) == {"event": "task:update", "data": task("a", progress=7)}
    head, data, end = ev.sse_bytes().decode().split("\n", 2)
    assert (head, json.loads(data.removeprefix("data: ")), end) == (
        "event: task:update",
        task("a", progress=7),
        "\n",
    )


def test_the_snapshot_is_agents_then_the_newest_tasks_and_only_what_the_stream_may_read() -> None:
    tasks = [
        task(f"t{i:04d}", created=f"2026-12-03T10:{i // 60:02d}:{i % 60:02d}Z") for i in range(600)
    ]
    tasks[3] = task("t0003", "Failed", created=tasks[3]["createdAt"])
    agents = [{"name": "b"}]
    events = live.snapshot(tasks, agents, frozenset({"task", "agent"}))
    assert events[0].name == "agent:status"
    names = [e.data["name"] for e in events[1:] if e.name == "task:update"]
    assert len(names) == live.SNAPSHOT_TASKS and names[0] == "t0599" and names[-1] == "t0100"
    assert not [e for e in events if e.name.endswith(":complete")]  # t0003 is not among the newest
    few = live.snapshot(tasks[:5], agents, frozenset({"task"}))
    assert [e.name for e in few][:4] == [
        "task:update",
        "task:update",
        "task:uid-t0003:complete",
        "task:update",
    ]
    assert all(e.kind == "task" for e in few)


async def test_a_stream_gets_batches_of_what_it_may_read() -> None:
    s = live.Stream(frozenset({"task"}))
    s.push(live.Event.of("agent:status", "agent", {"name": "b"}))
    s.push(live.Event.of("task:update", "task", task("a")))
    s.push(live.Event.of("task:update", "task", task("c")))
    assert [e.data["name"] for e in await s.next_batch()] == ["a", "c"]
    waiting = asyncio.create_task(s.next_batch())
    await asyncio.sleep(0)
    assert not waiting.done()
    s.push(live.Event.of("task:update", "task", task("d")))
    assert [e.data["name"] for e in await waiting] == ["d"]


async def test_a_stream_that_falls_too_far_behind_is_ended_not_waited_for() -> None:
    s = live.Stream(frozenset({"task"}))
    for i in range(live.STREAM_BACKLOG + 1):
        s.push(live.Event.of("task:update", "task", task(f"t{i}")))
    with pytest.raises(live.StreamEnded) as e:
        await s.next_batch()
    assert (e.value.code, e.value.reason) == (503, "TooSlow")
    assert not s.pending  # nothing more is held for it


async def test_an_ended_stream_says_why_even_with_events_pending() -> None:
    s = live.Stream(frozenset({"task"}))
    s.push(live.Event.of("task:update", "task", task("a")))
    s.end(live.StreamEnded(403, "Forbidden", "no longer"))
    with pytest.raises(live.StreamEnded) as e:
        await s.next_batch()
    assert e.value.reason == "Forbidden"


async def test_a_stream_whose_rights_cannot_be_checked_again_is_ended() -> None:
    """The re-check fails (the API server unreachable, say): the stream is not kept
    unchecked; after two periods without an answer it ends."""

    class Unreachable(live.Hub):
        async def authorize(self, token: str, ns: str) -> frozenset[str]:
            raise TimeoutError("no answer")

    hub = Unreachable(None, None, recheck_seconds=0.01)  # type: ignore[arg-type]  # never called
    s = live.Stream(frozenset({"task"}))
    await asyncio.wait_for(hub.recheck(s, "token", "ns"), 2)
    with pytest.raises(live.StreamEnded) as e:
        await s.next_batch()
    assert (e.value.code, e.value.reason) == (503, "RightsUnchecked")


async def test_a_stream_whose_rights_went_is_ended_and_one_whose_rights_changed_follows_them() -> (
    None
):
    answers: list[frozenset[str] | live.StreamEnded] = [frozenset({"task"}), live.refused("ns")]

    class Reviewer(live.Hub):
        async def authorize(self, token: str, ns: str) -> frozenset[str]:
            answer = answers.pop(0)
            if isinstance(answer, live.StreamEnded):
                raise answer
            return answer

    hub = Reviewer(None, None, recheck_seconds=0.01)  # type: ignore[arg-type]  # never called
    s = live.Stream(frozenset({"task", "agent"}))
    await asyncio.wait_for(hub.recheck(s, "token", "ns"), 2)
    assert s.kinds == frozenset({"task"})  # Agents no longer readable: no agent:status
    with pytest.raises(live.StreamEnded) as e:
        await s.next_batch()
    assert e.value.reason == "Forbidden"
