"""performance with engine lighthouse: a Lighthouse run against the attempt's own Chromium.

Lighthouse (Node.js, agent_images/lighthouse/) connects over the DevTools protocol to
the Chromium this attempt launched behind its egress proxy and opens a tab there, so
every request of the page under test goes through the same proxy and the same network
policy as any browser task (the Lighthouse process itself talks only to that Chromium,
on loopback). Its JSON report is an artifact; category scores and lab Core Web Vitals
go into the result and are judged against the task's budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from wallestars_browser.payloads import LIGHTHOUSE_CATEGORIES, PERF_METRICS, Performance

from .common import Outcome, Run, TaskError
from .performance import judge

# Our metric names -> Lighthouse audits (numericValue: ms, or unitless for CLS).
AUDITS = {"fcp": "first-contentful-paint", "lcp": "largest-contentful-paint",
          "cls": "cumulative-layout-shift", "tbt": "total-blocking-time",
          "ttfb": "server-response-time"}  # fmt: skip
EXTRA_AUDITS = {"speedIndex": "speed-index", "tti": "interactive"}
NOT_REPORTED = {m: "Lighthouse does not report it (use engine playwright)"
                for m in PERF_METRICS if m not in AUDITS}  # fmt: skip
REPORT_LIMIT = 16 * 1024 * 1024  # a report is ~0.5 MB; more is not a report


def command(node: str, cli: str, url: str, port: int, form_factor: str, out: Path,
            timeout_ms: float) -> list[str]:  # fmt: skip
    """Lighthouse's command line (pure): the running Chromium at `port`, JSON out."""
    argv = [node, cli, url, f"--port={port}", "--hostname=127.0.0.1", "--output=json",
            f"--output-path={out}", "--quiet", "--no-enable-error-reporting",
            "--only-categories=" + ",".join(LIGHTHOUSE_CATEGORIES),
            f"--max-wait-for-load={int(max(5000, timeout_ms * 0.6))}"]  # fmt: skip
    if form_factor == "desktop":
        argv.append("--preset=desktop")
    return argv


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """What the result keeps of a report (pure): version, scores, metrics, problems."""
    audits = report.get("audits") or {}

    def value(audit: str) -> float | None:
        v = (audits.get(audit) or {}).get("numericValue")
        return None if v is None else round(float(v), 4 if audit.startswith("cumulative") else 1)

    return {
        "version": report.get("lighthouseVersion"),
        "formFactor": (report.get("configSettings") or {}).get("formFactor"),
        "categories": {
            k: (c or {}).get("score") for k, c in (report.get("categories") or {}).items()
        },
        "metrics": {k: value(a) for k, a in {**AUDITS, **EXTRA_AUDITS}.items()},
        "runtimeError": report.get("runtimeError"),
        "runWarnings": list(report.get("runWarnings") or [])[:20],
    }


def judge_categories(scores: dict[str, float | None],
                     minimums: dict[str, float]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per budgeted category: score, minimum, passed (pure). A category Lighthouse could
    not score (null: an error in its audits) fails its budget."""
    return {c: {"score": scores.get(c), "minimum": m,
                "passed": scores.get(c) is not None and float(scores[c] or 0) >= m}
            for c, m in minimums.items()}  # fmt: skip


def node_binary() -> str:
    """The Node.js that Playwright ships as its driver: in every image that has Playwright."""
    import playwright

    node = Path(playwright.__file__).parent / "driver" / "node"
    if not node.exists():
        raise TaskError("LighthouseUnavailable", f"no Node.js at {node}", False)
    return str(node)


async def run(r: Run, p: Performance) -> Outcome:
    if r.engine != "chromium" or r.debug_port is None:
        raise TaskError("LighthouseUnavailable",
                        f"Lighthouse runs in Chromium only; this Agent's browser is {r.engine}",
                        False)  # fmt: skip
    if not r.lighthouse or not Path(r.lighthouse).exists():
        raise TaskError("LighthouseUnavailable",
                        "this image has no Lighthouse (WALLESTARS_LIGHTHOUSE names its cli)",
                        False)  # fmt: skip
    await r.progress(30)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "report.json"
        argv = command(node_binary(), r.lighthouse, p.url, r.debug_port, p.form_factor, out,
                       r.timeout_ms)  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALLESTARS_")}
        env |= {"HOME": d, "TMPDIR": d}  # its temp files, in the writable emptyDir
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, env=env)  # fmt: skip
        try:
            logs, _ = await asyncio.wait_for(proc.communicate(), r.timeout_ms / 1000)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise TaskError(
                "Timeout", "Lighthouse did not finish in the attempt's time", True
            ) from None
        # A page that did not load still gets a report (its runtimeError), exit status 1.
        if not out.exists():
            tail = logs.decode(errors="replace")[-2000:]
            raise TaskError(
                "LighthouseFailed", f"Lighthouse exited {proc.returncode}: {tail}", True
            )
        raw = out.read_bytes()[:REPORT_LIMIT]
    r.evidence.add("lighthouse.json", raw, "application/json")
    summary = summarize(json.loads(raw))
    await r.progress(80)
    err = summary["runtimeError"]
    if err:  # the page did not load (refused by the proxy, an HTTP error): nothing to judge
        raise TaskError("NavigationFailed",
                        f"Lighthouse could not load {p.url}: {err.get('code')}: "
                        f"{err.get('message', '')}"[:1000], True)  # fmt: skip
    values = {k: v for k, v in summary["metrics"].items() if k in AUDITS and v is not None}
    budgets = judge(values, p.thresholds, NOT_REPORTED)
    categories = judge_categories(summary["categories"], p.categories)
    failed = [
        f"{k} {v['value']} > {v['budget']}" for k, v in budgets.items() if v["passed"] is False
    ]
    failed += [f"{c} score {v['score']} < {v['minimum']}" for c, v in categories.items()
               if not v["passed"]]  # fmt: skip
    data = {"url": p.url, "engine": "lighthouse", "lighthouse": summary,
            "metrics": values, "budgets": budgets, "categoryBudgets": categories}  # fmt: skip
    numeric = {**values, **{f"{c.replace('-', '_')}Score": float(s)
                            for c, s in summary["categories"].items() if s is not None}}  # fmt: skip
    return Outcome(data, numeric, "over budget: " + ", ".join(failed) if failed else None)
