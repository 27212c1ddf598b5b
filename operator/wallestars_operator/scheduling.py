"""Which waiting AgentTasks go to which Agent now: a pure function of what the API holds.

Slots are counted from the tasks' own status (phase Dispatched or Running on that
agent), never kept in memory, so a crash, a cancel or a deletion can never leak one.
Tasks are taken by priority (high first), then age (old first), then name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wallestars_api.lifecycle import LIVE, TERMINAL, Phase, parse_ts


@dataclass(frozen=True)
class AgentView:
    namespace: str
    name: str
    type: str
    capabilities: frozenset[str]
    concurrency: int
    paused: bool = False
    ready: bool = True  # configuration valid and (cloud) health probe passing

    @classmethod
    def of(cls, obj: Mapping[str, Any], ready: bool = True) -> AgentView:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            type=spec.get("type", ""),
            capabilities=frozenset(spec.get("capabilities") or []),
            concurrency=int(spec.get("concurrency") or 1),
            paused=bool(spec.get("paused")),
            ready=ready,
        )


@dataclass(frozen=True)
class TaskView:
    namespace: str
    name: str
    created: datetime
    priority: int
    phase: Phase | None
    agent: str | None  # status.agent: where the current attempt runs
    agent_ref: str | None
    selector_type: str | None
    selector_caps: frozenset[str]
    task_type: str
    suspend: bool = False
    cancel: bool = False
    next_attempt: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> TaskView:
        meta, spec, status = (
            obj.get("metadata") or {},
            obj.get("spec") or {},
            obj.get("status") or {},
        )
        sel = spec.get("agentSelector") or {}
        phase = status.get("phase")
        created = parse_ts(meta.get("creationTimestamp"))
        assert created is not None
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            created=created,
            priority=int(spec.get("priority", 5)),
            phase=Phase(phase) if phase else None,
            agent=status.get("agent"),
            agent_ref=spec.get("agentRef"),
            selector_type=sel.get("type") if spec.get("agentSelector") is not None else None,
            selector_caps=frozenset(sel.get("capabilities") or []),
            task_type=spec.get("type", ""),
            suspend=bool(spec.get("suspend")),
            cancel=bool(spec.get("cancel")),
            next_attempt=parse_ts(status.get("nextAttemptTime")),
        )


@dataclass(frozen=True)
class Wait:
    reason: str  # AgentAtCapacity, NoAgentWithCapability, AgentNotFound, AgentUnhealthy, AgentPaused, Suspended, BackingOff
    message: str
    position: int | None = None


@dataclass
class Plan:
    dispatch: list[tuple[TaskView, AgentView]] = field(default_factory=list)
    waiting: dict[tuple[str, str], Wait] = field(default_factory=dict)
    load: dict[tuple[str, str], int] = field(
        default_factory=dict
    )  # agent -> slots in use after the plan
    queued: dict[tuple[str, str], int] = field(
        default_factory=dict
    )  # agent -> tasks waiting for it


def order_key(t: TaskView) -> tuple[int, datetime, str]:
    return (-t.priority, t.created, t.name)


def eligible(t: TaskView, agents: Iterable[AgentView]) -> list[AgentView]:
    """Agents that could run ``t`` at all (same namespace; by name, or type and capabilities)."""
    same_ns = [a for a in agents if a.namespace == t.namespace]
    if t.agent_ref is not None:
        return [a for a in same_ns if a.name == t.agent_ref]
    return [
        a
        for a in same_ns
        if (t.selector_type is None or a.type == t.selector_type)
        and (t.selector_caps | ({t.task_type} if t.task_type != "custom" else set()))
        <= a.capabilities
    ]


def plan(tasks: Sequence[TaskView], agents: Sequence[AgentView], now: datetime) -> Plan:
    """Dispatch what can run now; say for every other waiting task why it waits."""
    out = Plan()
    for a in agents:
        out.load[(a.namespace, a.name)] = 0
    for t in tasks:
        if t.phase in LIVE and t.agent is not None and (t.namespace, t.agent) in out.load:
            out.load[(t.namespace, t.agent)] += 1
    candidates = sorted(
        (t for t in tasks if t.phase is None or t.phase in (Phase.QUEUED, Phase.RETRYING)),
        key=order_key,
    )
    position = 0
    for t in candidates:
        if t.cancel or t.phase in TERMINAL:
            continue  # the operator ends these; they are not queued
        if t.suspend:
            out.waiting[t.key] = Wait(
                "Suspended", "spec.suspend is true; set it to false to run the task"
            )
            continue
        if t.phase == Phase.RETRYING and t.next_attempt is not None and t.next_attempt > now:
            out.waiting[t.key] = Wait(
                "BackingOff", f"the next attempt starts at {t.next_attempt:%Y-%m-%dT%H:%M:%SZ}"
            )
            continue
        options = eligible(t, agents)
        if t.phase == Phase.RETRYING and t.agent is not None and t.agent_ref is None:
            # A retry prefers the agent of the failed attempt only if nothing else fits.
            options.sort(key=lambda a: a.name == t.agent)
        wait = _why_not(t, options, out.load)
        if wait is None:
            best = min(
                (a for a in options if not a.paused and a.ready and _free(a, out.load) > 0),
                key=lambda a: (
                    out.load[(a.namespace, a.name)] / a.concurrency,
                    out.load[(a.namespace, a.name)],
                    a.name,
                ),
            )
            out.load[(best.namespace, best.name)] += 1
            out.dispatch.append((t, best))
            continue
        position += 1 if wait.reason == "AgentAtCapacity" else 0
        out.waiting[t.key] = Wait(
            wait.reason, wait.message, position if wait.reason == "AgentAtCapacity" else None
        )
        for a in options:
            k = (a.namespace, a.name)
            out.queued[k] = out.queued.get(k, 0) + 1
    return out


def _free(a: AgentView, load: Mapping[tuple[str, str], int]) -> int:
    return a.concurrency - load[(a.namespace, a.name)]


def _why_not(
    t: TaskView, options: Sequence[AgentView], load: Mapping[tuple[str, str], int]
) -> Wait | None:
    if not options:
        if t.agent_ref is not None:
            return Wait("AgentNotFound", f'no Agent "{t.agent_ref}" in namespace {t.namespace}')
        need = sorted(t.selector_caps | ({t.task_type} if t.task_type != "custom" else set()))
        kind = f"{t.selector_type} " if t.selector_type else ""
        return Wait(
            "NoAgentWithCapability",
            f"no {kind}Agent in namespace {t.namespace} has every capability of {need}",
        )
    active = [a for a in options if not a.paused]
    if not active:
        return Wait(
            "AgentPaused", f"every matching agent is paused: {', '.join(a.name for a in options)}"
        )
    healthy = [a for a in active if a.ready]
    if not healthy:
        return Wait(
            "AgentUnhealthy", f"no matching agent is Ready: {', '.join(a.name for a in active)}"
        )
    if all(_free(a, load) <= 0 for a in healthy):
        return Wait(
            "AgentAtCapacity", f"every slot of {', '.join(a.name for a in healthy)} is in use"
        )
    return None
