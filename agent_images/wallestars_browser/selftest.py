"""``--self-test``: the image's health check and the Agent's health probe.

Starts the egress proxy and the Agent's engine exactly as an attempt does, renders a
page, and checks that the proxy refuses the cloud metadata address. Exit 0 when all
holds. The verdict is also written, as one JSON line, to the container's termination
message, where the operator reads it (probes.py): {healthy, engine, version, reason,
message}.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from .browser import context_options
from .egress import EgressProxy, NetworkPolicy
from .runner import RunnerSettings, start_browser
from .tasks import TaskError

TERMINATION_LOG = "/dev/termination-log"


async def probe(s: RunnerSettings) -> dict[str, Any]:
    """The verdict: every check's outcome and, when one failed, why."""
    checks: dict[str, bool] = {}
    version = ""
    with tempfile.TemporaryDirectory() as work:
        async with EgressProxy(NetworkPolicy(), Path(work)) as proxy, async_playwright() as pw:
            await proxy.ready()
            try:
                browser = await start_browser(pw, s, Path(work), proxy.url)
            except TaskError as e:
                return verdict(s.browser, "", {f"{s.browser} starts": False}, e.code, e.message)
            version = browser.version
            page = await (await browser.new_context(**context_options(None))).new_page()
            await page.set_content("<h1>wallestars self-test</h1>")
            checks[f"{s.browser} renders"] = (await page.screenshot()).startswith(b"\x89PNG")
            response = await page.goto("http://169.254.169.254/latest/meta-data/", timeout=10_000)
            checks["metadata address refused"] = response is not None and response.status == 407
            await browser.close()
    return verdict(s.browser, version, checks, "SelfTestFailed", "")


def verdict(
    engine: str, version: str, checks: dict[str, bool], reason: str, message: str
) -> dict[str, Any]:
    failed = [name for name, ok in checks.items() if not ok]
    if not failed:
        return {"healthy": True, "engine": engine, "version": version, "checks": checks,
                "message": f"{engine} {version}: self-test passed"}  # fmt: skip
    return {"healthy": False, "engine": engine, "version": version, "checks": checks,
            "reason": reason, "message": message or "failed: " + ", ".join(failed)}  # fmt: skip


async def main() -> int:
    s = RunnerSettings(task_type="screenshot")
    try:
        v = await probe(s)
    except Exception as e:  # the probe's own failure is the answer, not a crash
        v = verdict(s.browser, "", {"self-test runs": False}, "SelfTestFailed",
                    f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")  # fmt: skip
    for name, ok in v["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(v["message"])
    path = os.environ.get("WALLESTARS_TERMINATION_LOG", TERMINATION_LOG)
    if os.path.exists(path) and os.access(path, os.W_OK):
        Path(path).write_text(json.dumps(v, separators=(",", ":"))[:4000])
    return 0 if v["healthy"] else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
