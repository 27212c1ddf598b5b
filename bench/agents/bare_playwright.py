"""The same page work as the browser agent's task types, as a bare Playwright script in
one process: no egress proxy, no SDK, no callbacks, no uploads. bench/browser_tasks.py
divides the agent's time by this script's.

    python bench/agents/bare_playwright.py TYPE SITE_URL CHROMIUM
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright
from wallestars_browser.tasks.performance import OBSERVERS, READ


async def screenshot(page: Page, site: str) -> None:
    await page.goto(f"{site}/")
    Path(tempfile.gettempdir(), "bare.png").write_bytes(await page.screenshot(full_page=True))


async def scrape(page: Page, site: str) -> None:
    await page.goto(f"{site}/list")
    items: list[str] = []
    while True:
        items += await page.locator(".item").all_inner_texts()
        nxt = page.locator("#next")
        if await nxt.count() == 0:
            break
        await nxt.click()
        await page.wait_for_load_state()


async def e2e(page: Page, site: str) -> None:
    await page.goto(f"{site}/form")
    await page.fill("#name", "Ada")
    await page.select_option("#plan", "pro")
    await page.click("#submit")
    await page.wait_for_url("**/form/done*")
    await page.locator("#thanks").wait_for()


async def performance(page: Page, site: str) -> None:
    await page.add_init_script(OBSERVERS)
    await page.goto(f"{site}/heavy")
    await asyncio.sleep(1.0)  # the agent lets late LCP/CLS entries arrive too
    await page.evaluate(READ)


async def accessibility(page: Page, site: str) -> None:
    from axe_playwright_python.async_playwright import Axe

    await page.goto(f"{site}/form")
    await Axe().run(page)


WORK = {"screenshot": screenshot, "scrape": scrape, "e2e-test": e2e,
        "performance": performance, "accessibility": accessibility}  # fmt: skip


async def main(kind: str, site: str, chromium: str) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        page = await browser.new_page()
        await WORK[kind](page, site)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
