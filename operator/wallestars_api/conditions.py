"""metav1.Condition lists, updated without losing transition times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: str,
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; lastTransitionTime moves only when status changes."""
    st = ("True" if status else "False") if isinstance(status, bool) else status
    out: list[dict[str, Any]] = []
    found = False
    for c in conditions:
        if c.get("type") != type_:
            out.append(dict(c))
            continue
        found = True
        changed = c.get("status") != st
        new = {
            "type": type_,
            "status": st,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": now if changed else c.get("lastTransitionTime", now),
        }
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        out.append(new)
    if not found:
        new = {
            "type": type_,
            "status": st,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": now,
        }
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        out.append(new)
    return out


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
