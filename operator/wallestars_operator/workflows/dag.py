"""The steps of a workflow as a graph: what is wrong with it, and in what order (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def graph_problem(steps: Sequence[Mapping[str, Any]]) -> str | None:
    """Why these steps are not a DAG (duplicate or unknown names, a cycle, named), or None.
    The API server refuses the first two already (CEL); a cycle only shows here."""
    names = [s["name"] for s in steps]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return f"two steps are named {n!r}"
        seen.add(n)
    for s in steps:
        if "withItems" in s and "withResultItems" in s:
            return f"step {s['name']!r} sets both withItems and withResultItems: choose one"
        for d in s.get("dependsOn") or []:
            if d not in seen:
                return f"step {s['name']!r} depends on {d!r}, which is not a step"
            if d == s["name"]:
                return f"step {s['name']!r} depends on itself"
    cycle = find_cycle({s["name"]: list(s.get("dependsOn") or []) for s in steps})
    if cycle:
        return "the steps depend on each other in a cycle: " + " -> ".join(cycle)
    return None


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts (a -> b -> a), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = GREY
        stack.append(n)
        for d in deps.get(n, ()):
            if color.get(d) == GREY:
                return [*stack[stack.index(d) :], d]
            if color.get(d) == WHITE and (found := visit(d)):
                return found
        stack.pop()
        color[n] = BLACK
        return None

    for n in deps:
        if color[n] == WHITE and (found := visit(n)):
            return found
    return None


def downstream(deps: Mapping[str, Sequence[str]], roots: set[str]) -> set[str]:
    """Every step that depends, directly or not, on one of ``roots`` (roots excluded)."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for n, ds in deps.items():
            if n not in out and n not in roots and any(d in roots or d in out for d in ds):
                out.add(n)
                changed = True
    return out
