"""accessibility: axe-core in the page; violations by impact against the allowed counts."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from axe_playwright_python.async_playwright import Axe

from wallestars_browser.payloads import IMPACTS, Accessibility

from .common import Outcome, Run, open_page

AXE = Axe()
MAX_LISTED = 50  # violations listed inline; every one is in the artifact


def summarize(violations: list[dict[str, Any]]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts of affected nodes per impact, and a short list of violations (pure)."""
    counts: Counter[str] = Counter()
    listed = []
    for v in violations:
        impact = v.get("impact") or "minor"
        counts[impact] += len(v.get("nodes") or [])
        listed.append({
            "id": v.get("id"), "impact": impact, "help": (v.get("help") or "")[:200],
            "targets": [n.get("target") for n in (v.get("nodes") or [])][:10],
        })  # fmt: skip
    by_impact = {k: counts.get(k, 0) for k in IMPACTS}
    by_impact["total"] = sum(counts.values())
    return by_impact, listed


def over_allowed(counts: dict[str, int], allowed: dict[str, float]) -> list[str]:
    """Impacts whose count exceeds what is allowed; an impact not listed allows none."""
    limits = {k: allowed.get(k, 0 if k != "total" else float("inf")) for k in counts}
    return [k for k, n in counts.items() if n > limits[k]]


async def run(r: Run, p: Accessibility) -> Outcome:
    page = await r.context.new_page()
    status = await open_page(page, p.url, p.wait_for, r.timeout_ms)
    await r.progress(50)
    tags = {"wcag2a": ["wcag2a"], "wcag2aa": ["wcag2a", "wcag2aa"],
            "wcag2aaa": ["wcag2a", "wcag2aa", "wcag2aaa"], "wcag21a": ["wcag2a", "wcag21a"],
            "wcag21aa": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"],
            "wcag22aa": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"],
            "best-practice": ["best-practice"]}[p.standard]  # fmt: skip
    result = await AXE.run(
        page, options={"runOnly": {"type": "tag", "values": tags}, "resultTypes": ["violations"]}
    )
    violations = result.response.get("violations") or []
    counts, listed = summarize(violations)
    r.evidence.add("axe-results.json", json.dumps(result.response).encode(), "application/json")
    bad = over_allowed(counts, p.thresholds)
    data = {"url": page.url, "status": status, "standard": p.standard, "counts": counts,
            "violations": listed[:MAX_LISTED], "passed": not bad}  # fmt: skip
    failure = None
    if bad:
        failure = "violations over the allowed count: " + ", ".join(f"{k} {counts[k]}" for k in bad)
    return Outcome(data, {f"violations_{k}": float(v) for k, v in counts.items()}, failure)
