"""Scheduling: slots, order, reasons, selection by capability and load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from wallestars_api.lifecycle import Phase
from wallestars_operator.scheduling import AgentView, TaskView, plan

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def agent(
    name: str,
    slots: int = 2,
    caps: tuple[str, ...] = ("screenshot",),
    type_: str = "browser",
    **kw: bool,
) -> AgentView:
    return AgentView("ns", name, type_, frozenset(caps), slots, **kw)


def task(name: str, age: int = 0, priority: int = 5, ref: str | None = "a", phase: Phase | None = None,
         agent_: str | None = None, caps: tuple[str, ...] = (), type_: str = "screenshot", **kw: object) -> TaskView:  # fmt: skip
    return TaskView(
        "ns", name, NOW - timedelta(seconds=age), priority, phase, agent_, ref,
        "browser" if ref is None else None, frozenset(caps), type_, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_priority_then_age_and_slots() -> None:
    tasks = [
        task("low-old", age=100, priority=1),
        task("high-new", age=1, priority=9),
        task("mid-old", age=50),
        task("mid-new", age=10),
    ]
    p = plan(tasks, [agent("a", slots=2)], NOW)
    assert [t.name for t, _ in p.dispatch] == ["high-new", "mid-old"]
    assert (
        p.waiting[("ns", "mid-new")].reason == "AgentAtCapacity"
        and p.waiting[("ns", "mid-new")].position == 1
    )
    assert p.waiting[("ns", "low-old")].position == 2


def test_running_tasks_hold_their_slots() -> None:
    tasks = [
        task("r1", phase=Phase.RUNNING, agent_="a"),
        task("d1", phase=Phase.DISPATCHED, agent_="a"),
        task("q"),
    ]
    p = plan(tasks, [agent("a", slots=2)], NOW)
    assert p.dispatch == [] and p.waiting[("ns", "q")].reason == "AgentAtCapacity"
    # A finished, retrying or deleted task frees its slot: nothing is remembered elsewhere.
    tasks[0] = task("r1", phase=Phase.SUCCEEDED, agent_="a")
    assert [t.name for t, _ in plan(tasks, [agent("a", slots=2)], NOW).dispatch] == ["q"]


def test_reasons() -> None:
    assert (
        plan([task("t", ref="nope")], [agent("a")], NOW).waiting[("ns", "t")].reason
        == "AgentNotFound"
    )
    assert (
        plan([task("t", ref=None, caps=("pdf",))], [agent("a")], NOW).waiting[("ns", "t")].reason
        == "NoAgentWithCapability"
    )
    assert (
        plan([task("t")], [agent("a", paused=True)], NOW).waiting[("ns", "t")].reason
        == "AgentPaused"
    )
    assert (
        plan([task("t")], [agent("a", ready=False)], NOW).waiting[("ns", "t")].reason
        == "AgentUnhealthy"
    )
    assert (
        plan([task("t", suspend=True)], [agent("a")], NOW).waiting[("ns", "t")].reason
        == "Suspended"
    )
    backing = task("t", phase=Phase.RETRYING, next_attempt=NOW + timedelta(seconds=5))
    assert plan([backing], [agent("a")], NOW).waiting[("ns", "t")].reason == "BackingOff"
    assert plan([task("t", cancel=True)], [agent("a")], NOW).dispatch == []


def test_selector_picks_least_loaded_capable_ready_agent() -> None:
    agents = [
        agent("busy", slots=4),
        agent("idle", slots=4),
        agent("blind", caps=("scrape",)),
        agent("off", paused=True, slots=9),
    ]
    tasks = [
        task("r1", phase=Phase.RUNNING, agent_="busy"),
        task("r2", phase=Phase.RUNNING, agent_="busy"),
        task("new", ref=None),
    ]
    [(t, a)] = plan(tasks, agents, NOW).dispatch
    assert (t.name, a.name) == ("new", "idle")


def test_a_task_type_is_a_required_capability() -> None:
    p = plan([task("t", ref=None, type_="accessibility")], [agent("a", caps=("screenshot",))], NOW)
    assert p.waiting[("ns", "t")].reason == "NoAgentWithCapability"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10),
            st.integers(0, 1000),
            st.sampled_from([None, "Queued", "Running", "Dispatched", "Succeeded"]),
            st.sampled_from(["a", "b"]),
        ),
        max_size=40,
    ),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_never_more_than_concurrency_and_order_is_kept(
    raw: list[tuple[int, int, str | None, str]], slots_a: int, slots_b: int
) -> None:
    tasks = [
        task(
            f"t{i}",
            age=age,
            priority=prio,
            ref=ref,
            phase=Phase(ph) if ph else None,
            agent_=ref if ph in ("Running", "Dispatched") else None,
        )
        for i, (prio, age, ph, ref) in enumerate(raw)
    ]
    agents = [agent("a", slots=slots_a), agent("b", slots=slots_b)]
    p = plan(tasks, agents, NOW)
    for a in agents:
        running = sum(
            1 for t in tasks if t.phase in (Phase.RUNNING, Phase.DISPATCHED) and t.agent == a.name
        )
        dispatched = sum(1 for _, x in p.dispatch if x.name == a.name)
        assert dispatched <= max(0, a.concurrency - running)
        # Whatever waits for an agent at capacity ranks after everything dispatched to it.
        sent = [t for t, x in p.dispatch if x.name == a.name]
        left = [
            t
            for t in tasks
            if t.agent_ref == a.name
            and p.waiting.get(t.key, None)
            and p.waiting[t.key].reason == "AgentAtCapacity"
        ]
        if sent and left:
            worst_sent = max((-t.priority, t.created, t.name) for t in sent)
            best_left = min((-t.priority, t.created, t.name) for t in left)
            assert worst_sent < best_left
