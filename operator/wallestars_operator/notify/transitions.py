"""Which transitions an object has gone through, read from its status alone (pure).

Read from status rather than from watch events: an operator that was down, or a watch
that coalesced two writes, would otherwise miss a phase the object passed through. A
transition's id is stable (a phase, and for the phases an attempt repeats, the attempt),
so the same transition is recognised after any restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TASK_PHASES = ("Queued", "Dispatched", "Running", "Retrying", "Succeeded",
               "PartiallySucceeded", "Failed", "TimedOut", "Cancelled")  # fmt: skip
TASK_TERMINAL = frozenset(TASK_PHASES[4:])
WORKFLOW_PHASES = ("Running", "Suspended", "Succeeded", "Failed", "Cancelled")
WORKFLOW_TERMINAL = frozenset(WORKFLOW_PHASES[2:])
PER_ATTEMPT = frozenset({"Dispatched", "Running", "Retrying"})


@dataclass(frozen=True)
class Transition:
    id: str  # "Succeeded", or "Running#2" for a phase an attempt repeats
    phase: str
    attempt: int  # 0 where no attempt applies
    time: str  # when it happened (RFC 3339), "" if status does not say


def task_transitions(task: Mapping[str, Any]) -> list[Transition]:
    status = task.get("status") or {}
    phase = status.get("phase", "")
    if not phase:
        return []
    meta = task.get("metadata") or {}
    out = [Transition("Queued", "Queued", 0, str(meta.get("creationTimestamp", "")))]
    records = [r for r in status.get("attempts") or [] if isinstance(r, Mapping)]
    last = max((int(r.get("attempt", 0)) for r in records), default=0)
    for r in records:
        a = int(r.get("attempt", 0))
        if r.get("dispatchTime"):
            out.append(Transition(f"Dispatched#{a}", "Dispatched", a, str(r["dispatchTime"])))
        if r.get("startTime"):
            out.append(Transition(f"Running#{a}", "Running", a, str(r["startTime"])))
        retried = a < last or (phase == "Retrying" and a == int(status.get("attempt", 0)))
        if r.get("outcome") in ("Failed", "TimedOut") and retried:
            out.append(Transition(f"Retrying#{a}", "Retrying", a, str(r.get("completionTime", ""))))
    if phase in TASK_TERMINAL:
        out.append(Transition(phase, phase, int(status.get("attempt", 0) or 0),
                              str(status.get("completionTime", ""))))  # fmt: skip
    return out


def workflow_transitions(wf: Mapping[str, Any]) -> list[Transition]:
    status = wf.get("status") or {}
    phase = status.get("phase", "")
    out: list[Transition] = []
    if status.get("startTime"):
        out.append(Transition("Running", "Running", 0, str(status["startTime"])))
    if phase == "Suspended":
        out.append(Transition("Suspended", "Suspended", 0, ""))
    if phase in WORKFLOW_TERMINAL:
        out.append(Transition(phase, phase, 0, str(status.get("completionTime", ""))))
    return out


def transitions(kind: str, obj: Mapping[str, Any]) -> list[Transition]:
    return workflow_transitions(obj) if kind == "AgentWorkflow" else task_transitions(obj)
