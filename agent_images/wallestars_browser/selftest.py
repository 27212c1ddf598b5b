"""``--self-test``: the image's health check, with no task and no network.

Starts the egress proxy and Chromium exactly as an attempt does, renders a page, and
checks that the proxy refuses the cloud metadata address. Exit 0 when all holds.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from .browser import context_options, launch_options
from .egress import EgressProxy, NetworkPolicy
from .runner import RunnerSettings


async def main() -> int:
    s = RunnerSettings(task_type="screenshot")
    with tempfile.TemporaryDirectory() as work:
        async with EgressProxy(NetworkPolicy(), Path(work)) as proxy, async_playwright() as pw:
            await proxy.ready()
            browser = await pw.chromium.launch(**launch_options(proxy.url, s.chromium))
            page = await (await browser.new_context(**context_options(None))).new_page()
            await page.set_content("<h1>wallestars self-test</h1>")
            png = await page.screenshot()
            response = await page.goto("http://169.254.169.254/latest/meta-data/", timeout=10_000)
            refused = response is not None and response.status == 407
            await browser.close()
    checks = {
        "chromium renders": png.startswith(b"\x89PNG"),
        "metadata address refused": refused,
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
