"""What a task's page shows of its result, by type (pure): images, a table, steps,
metrics against budgets, violations grouped by impact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

IMPACTS = ("critical", "serious", "moderate", "minor")
IMAGE_TYPES = ("image/png", "image/jpeg")


def artifacts(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    res = (task.get("status") or {}).get("result") or {}
    return [dict(a) for a in res.get("artifacts") or [] if isinstance(a, Mapping) and a.get("name")]


def images(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [a for a in artifacts(task) if a.get("contentType") in IMAGE_TYPES]


def table(data: Any) -> tuple[list[str], list[list[str]]]:
    """A scrape's fields as a table: one column per field; a list field gives one row per
    item, a single field repeats down the rows."""
    fields = data if isinstance(data, Mapping) else {}
    cols = sorted(fields)
    depth = max(
        (len(v) for v in fields.values() if isinstance(v, list)), default=1 if fields else 0
    )
    rows = []
    for i in range(depth):
        row = []
        for c in cols:
            v = fields[c]
            v = (v[i] if i < len(v) else "") if isinstance(v, list) else (v if i == 0 else "")
            row.append(v if isinstance(v, str) else "" if v is None else str(v))
        rows.append(row)
    return cols, rows


def violations_by_impact(data: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in IMPACTS}
    for v in data.get("violations") or []:
        groups.setdefault(str(v.get("impact") or "minor"), []).append(dict(v))
    return [(k, vs) for k, vs in groups.items() if vs]


def budgets(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every measured metric, with its budget and verdict where it has one."""
    out = []
    metrics = data.get("metrics") or {}
    judged = data.get("budgets") or {}
    for k in sorted(set(metrics) | set(judged)):
        b = judged.get(k) or {}
        out.append({"metric": k, "value": metrics.get(k, b.get("value")), "budget": b.get("budget"),
                    "passed": b.get("passed"), "unavailable": b.get("unavailable") or (data.get("unavailable") or {}).get(k)})  # fmt: skip
    return out


def timeline(task: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Attempts, callbacks and Events in time order."""
    st = task.get("status") or {}
    items: list[dict[str, str]] = []
    for a in st.get("attempts") or []:
        n = a.get("attempt")
        for key, what in (
            ("dispatchTime", "dispatched"),
            ("startTime", "started"),
            ("completionTime", "ended"),
        ):
            if a.get(key):
                detail = (
                    f" {a.get('outcome', '')} {a.get('reason', '')}".rstrip()
                    if key == "completionTime"
                    else ""
                )
                items.append(
                    {
                        "time": str(a[key]),
                        "kind": "attempt",
                        "text": f"attempt {n} {what} on {a.get('agent', '?')}{detail}",
                    }
                )
    for c in st.get("callbacks") or []:
        if c.get("receivedTime") or c.get("time"):
            items.append({"time": str(c.get("receivedTime") or c.get("time")), "kind": "callback",
                          "text": f"callback {c.get('status', '')} (attempt {c.get('attempt')}): {c.get('verdict', '')}"})  # fmt: skip
    for e in events:
        when = (
            e.get("lastTimestamp")
            or e.get("eventTime")
            or (e.get("metadata") or {}).get("creationTimestamp", "")
        )
        items.append(
            {
                "time": str(when),
                "kind": "event",
                "text": f"{e.get('reason', '')}: {e.get('message', '')}",
            }
        )
    return sorted(items, key=lambda i: i["time"])
