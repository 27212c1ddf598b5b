"""scrape: named fields (text or an attribute, first match or all) from one or more pages."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

from wallestars_browser.payloads import Field_, Scrape

from .common import Outcome, Run, TaskError, open_page


async def read_field(page: Page, f: Field_) -> Any:
    loc = page.locator(f.selector)
    if f.all:
        if f.attribute:
            return [await e.get_attribute(f.attribute) for e in await loc.all()]
        return [t.strip() for t in await loc.all_inner_texts()]
    if await loc.count() == 0:
        return None
    first = loc.first
    if f.attribute:
        return await first.get_attribute(f.attribute)
    return (await first.inner_text()).strip()


async def read_page(page: Page, fields: dict[str, Field_]) -> dict[str, Any]:
    return {name: await read_field(page, f) for name, f in fields.items()}


async def run(r: Run, p: Scrape) -> Outcome:
    page = await r.context.new_page()
    status = await open_page(page, p.url, p.wait_for, r.timeout_ms)
    await r.progress(50)
    fields = p.all_fields()
    if p.pagination is None:
        data = await read_page(page, fields)
        return Outcome({"url": page.url, "status": status, "data": data}, {"pages": 1})
    # With pagination every field is the list of its values, page after page.
    merged: dict[str, list[Any]] = {name: [] for name in fields}
    urls: list[str] = []
    for _ in range(p.pagination.max_pages):
        urls.append(page.url)
        for name, value in (await read_page(page, fields)).items():
            merged[name].extend(value if isinstance(value, list) else [value])
        nxt = page.locator(p.pagination.next_selector)
        if await nxt.count() == 0:
            break
        before = page.url
        try:
            await nxt.first.click(timeout=r.timeout_ms)
            await page.wait_for_load_state(
                p.wait_for if p.wait_for in ("load", "domcontentloaded", "networkidle") else "load"
            )
        except Exception as e:  # a next link that leads nowhere ends the walk, loudly
            raise TaskError("PaginationFailed", f"page {len(urls)}: {e}", True) from e
        if page.url == before:
            break
    return Outcome({"url": p.url, "status": status, "pages": urls, "data": merged},
                   {"pages": len(urls)})  # fmt: skip
