"""A workflow's steps as a drawing (pure): layers by dependency depth, one box per step
coloured by its phase, an arrow per dependency; rendered as SVG by the template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 180, 54, 70, 22, 12


@dataclass(frozen=True)
class Box:
    name: str
    phase: str
    task: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


def layers(steps: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each step's depth: 0 with no dependency, else one more than its deepest one (a
    cycle or an unknown name, which the workflow refuses anyway, counts as depth 0)."""
    deps = {s["name"]: [d for d in s.get("dependsOn") or []] for s in steps}
    depth: dict[str, int] = {}

    def of(n: str, seen: frozenset[str]) -> int:
        if n in depth:
            return depth[n]
        if n in seen or n not in deps:
            return 0
        d = 1 + max((of(x, seen | {n}) for x in deps[n] if x in deps), default=-1)
        depth[n] = d
        return d

    for n in deps:
        of(n, frozenset())
    return depth


def layout(wf: Mapping[str, Any]) -> tuple[list[Box], list[Edge], int, int]:
    steps = list((wf.get("spec") or {}).get("steps") or [])
    state = {s.get("name"): s for s in (wf.get("status") or {}).get("steps") or []}
    depth = layers(steps)
    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(depth[s["name"]], []).append(s["name"])
    pos: dict[str, tuple[int, int]] = {}
    boxes = []
    for col, names in sorted(columns.items()):
        for row, n in enumerate(names):
            x, y = PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y)
            pos[n] = (x, y)
            st = state.get(n) or {}
            boxes.append(Box(n, str(st.get("phase", "Pending")), str(st.get("task", "")), x, y))
    edges = [Edge(pos[d][0] + BOX_W, pos[d][1] + BOX_H // 2, pos[s["name"]][0], pos[s["name"]][1] + BOX_H // 2)
             for s in steps for d in s.get("dependsOn") or [] if d in pos]  # fmt: skip
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(v) for v in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    return boxes, edges, width, height
