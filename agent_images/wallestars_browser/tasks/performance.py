"""performance: navigation timing and Core Web Vitals measured in the page, against budgets."""

from __future__ import annotations

import asyncio
from typing import Any

from wallestars_browser.payloads import PERF_METRICS, Performance

from .common import Outcome, Run, open_page

# Installed before any page script runs, so the observers see the whole load.
OBSERVERS = """
(() => {
  const m = window.__wallestarsPerf = {lcp: 0, cls: 0, tbt: 0, fcp: 0};
  const watch = (type, fn) => {
    try { new PerformanceObserver(l => l.getEntries().forEach(fn)).observe({type, buffered: true}); }
    catch (e) {}
  };
  watch('largest-contentful-paint', e => { m.lcp = Math.max(m.lcp, e.startTime); });
  watch('layout-shift', e => { if (!e.hadRecentInput) m.cls += e.value; });
  watch('paint', e => { if (e.name === 'first-contentful-paint') m.fcp = e.startTime; });
  // Total Blocking Time: what long tasks spent beyond 50 ms (the INP proxy of a lab run).
  watch('longtask', e => { m.tbt += Math.max(0, e.duration - 50); });
})();
"""

READ = """
() => {
  const n = performance.getEntriesByType('navigation')[0];
  const m = window.__wallestarsPerf || {};
  return {
    ttfb: n ? n.responseStart - n.startTime : 0,
    domContentLoaded: n ? n.domContentLoadedEventEnd - n.startTime : 0,
    load: n ? n.loadEventEnd - n.startTime : 0,
    fcp: m.fcp || 0, lcp: m.lcp || 0, cls: m.cls || 0, tbt: m.tbt || 0,
    transferBytes: n ? n.transferSize : 0,
    resources: performance.getEntriesByType('resource').length,
    supported: (typeof PerformanceObserver !== 'undefined'
                && PerformanceObserver.supportedEntryTypes) || [],
  };
}
"""

SETTLE_SECONDS = 1.0  # LCP and layout shifts keep arriving a little after load
# The performance entry type each observed metric needs; not every engine has them all
# (Firefox has no layout-shift or longtask entries).
ENTRY_TYPES = {"fcp": "paint", "lcp": "largest-contentful-paint", "cls": "layout-shift",
               "tbt": "longtask"}  # fmt: skip


def unavailable(supported: list[str], engine: str) -> dict[str, str]:
    """Metrics this engine cannot measure, each with why (pure)."""
    return {
        metric: f"{engine} has no {entry!r} performance entries"
        for metric, entry in ENTRY_TYPES.items()
        if entry not in supported
    }


def judge(
    values: dict[str, float], budgets: dict[str, float], missing: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per budgeted metric: value, budget, passed (pure). A metric the engine cannot
    measure is neither passed nor failed: `passed` is None and `unavailable` says why."""
    out: dict[str, dict[str, Any]] = {}
    for k, b in budgets.items():
        if missing and k in missing:
            out[k] = {"value": None, "budget": b, "passed": None, "unavailable": missing[k]}
        else:
            out[k] = {"value": values[k], "budget": b, "passed": values[k] <= b}
    return out


async def run(r: Run, p: Performance) -> Outcome:
    if p.engine == "lighthouse":
        from . import lighthouse  # it uses judge() above

        return await lighthouse.run(r, p)
    page = await r.context.new_page()
    await page.add_init_script(OBSERVERS)
    status = await open_page(page, p.url, p.wait_for, r.timeout_ms)
    await r.progress(50)
    await page.wait_for_load_state("load")
    await asyncio.sleep(SETTLE_SECONDS)
    raw = await page.evaluate(READ)
    missing = unavailable(list(raw["supported"]), r.engine)
    values = {
        k: round(float(raw[k]), 4 if k == "cls" else 1) for k in PERF_METRICS if k not in missing
    }
    budgets = judge(values, p.thresholds, missing)
    failed = [k for k, v in budgets.items() if v["passed"] is False]
    data = {"url": page.url, "status": status, "metrics": values, "budgets": budgets,
            "transferBytes": raw["transferBytes"], "resources": raw["resources"],
            "engine": "playwright"}  # fmt: skip
    if missing:
        data["unavailable"] = missing
    failure = None
    if failed:
        failure = "over budget: " + ", ".join(
            f"{k} {budgets[k]['value']} > {budgets[k]['budget']}" for k in failed
        )
    return Outcome(data, values, failure)
