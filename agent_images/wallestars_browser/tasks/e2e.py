"""e2e-test: scripted steps, each with its status and duration; evidence of the first failure."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from wallestars_browser.payloads import E2E, Step

from .common import Outcome, Run, TaskError, first_line, open_page

log = logging.getLogger("wallestars.browser")


async def do(page: Page, s: Step, timeout_ms: float) -> None:
    """One step; raises when it fails (an assertion, a timeout, a missing element)."""
    loc = page.locator(s.selector) if s.selector else None
    match s.action:
        case "goto":
            assert s.url is not None
            await open_page(page, s.url, "load", timeout_ms)
        case "click":
            assert loc is not None
            await loc.first.click(timeout=timeout_ms)
        case "fill":
            assert loc is not None
            await loc.first.fill(s.value or "", timeout=timeout_ms)
        case "select":
            assert loc is not None and s.value is not None
            await loc.first.select_option(s.value, timeout=timeout_ms)
        case "press":
            assert loc is not None and s.value is not None
            await loc.first.press(s.value, timeout=timeout_ms)
        case "waitForSelector":
            assert loc is not None
            await loc.first.wait_for(state="visible", timeout=timeout_ms)
        case "waitForUrl":
            assert s.value is not None
            await page.wait_for_url(s.value, timeout=timeout_ms)
        case "waitForNetworkIdle":
            await page.wait_for_load_state("networkidle", timeout=timeout_ms)
        case "expectText":
            assert loc is not None and s.value is not None
            await expect(loc.first).to_contain_text(s.value, timeout=timeout_ms)
        case "expectVisible":
            assert loc is not None
            await expect(loc.first).to_be_visible(timeout=timeout_ms)
        case "expectCount":
            assert loc is not None and s.count is not None
            await expect(loc).to_have_count(s.count, timeout=timeout_ms)
        case "expectUrl":
            assert s.value is not None
            await expect(page).to_have_url(glob(s.value), timeout=timeout_ms)
        case "screenshot":
            pass  # taken by the caller, which owns the evidence
        case "wait":
            await asyncio.sleep((s.timeout_ms or 1000) / 1000)


def glob(pattern: str) -> str | re.Pattern[str]:
    """An exact URL, or a glob where ** is anything and * anything but '/'."""
    if "*" not in pattern:
        return pattern
    parts = re.split(r"(\*\*|\*)", pattern)
    rx = "".join(".*" if x == "**" else "[^/]*" if x == "*" else re.escape(x) for x in parts)
    return re.compile(f"^{rx}$")


async def run(r: Run, p: E2E) -> Outcome:
    steps: list[dict[str, Any]] = [
        {"name": s.label(i), "action": s.action, "status": "pending"} for i, s in enumerate(p.steps)
    ]
    first_failure: str | None = None
    stopped = False  # a step failed without continueOnFailure: the rest are skipped
    await r.context.tracing.start(screenshots=True, snapshots=True)
    try:
        page = await r.context.new_page()
        if p.url:
            await open_page(page, p.url, p.wait_for, r.timeout_ms)
        for i, s in enumerate(p.steps):
            rec = steps[i]
            if stopped:
                rec["status"] = "skipped"
                continue
            t0 = time.monotonic()
            try:
                await do(
                    page, s, s.timeout_ms if s.timeout_ms is not None else min(r.timeout_ms, 30_000)
                )
                if s.action == "screenshot":
                    r.evidence.add(f"step-{i + 1}.png", await page.screenshot(), "image/png")
                rec["status"] = "passed"
            except Exception as e:  # any failure of a step (assertion, timeout, missing element)
                rec["status"] = "failed"
                stopped = not s.continue_on_failure
                rec["error"] = e.message if isinstance(e, TaskError) else first_line(e)
                if first_failure is None:
                    first_failure = f"step {rec['name']!r} failed: {rec['error']}"
                    rec["artifact"] = f"failed-step-{i + 1}.png"
                    r.evidence.add(rec["artifact"], await page.screenshot(), "image/png")
            rec["durationMs"] = round((time.monotonic() - t0) * 1000, 1)
            await r.progress(10 + 85 * (i + 1) // len(p.steps))
    finally:
        # The trace is the evidence of a stopped run too, so it is saved on every way out.
        await save_trace(r)
    counts = {k: sum(1 for s in steps if s["status"] == k) for k in ("passed", "failed", "skipped")}
    return Outcome({"url": page.url, "steps": steps, **counts, "trace": "trace.zip"},
                   {k: float(v) for k, v in counts.items()}, first_failure)  # fmt: skip


async def save_trace(r: Run) -> None:
    """Best effort: a browser that is already gone leaves no trace to save."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.zip"
        try:
            await asyncio.wait_for(r.context.tracing.stop(path=path), 10)
        except Exception as e:
            log.warning("trace not saved: %s", first_line(e))
            return
        r.evidence.add("trace.zip", path.read_bytes(), "application/zip")
