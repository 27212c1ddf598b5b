"""screenshot: the page or one element as PNG/JPEG, optionally compared with a baseline."""

from __future__ import annotations

import json

import aiohttp
from wallestars_sdk.client import CallbackRejected

from wallestars_browser import imagediff
from wallestars_browser.payloads import Screenshot

from .common import Outcome, Run, TaskError, open_page

BASELINE_LIMIT = 20 * 1024 * 1024


async def run(r: Run, p: Screenshot) -> Outcome:
    page = await r.context.new_page()
    status = await open_page(page, p.url, p.wait_for, r.timeout_ms)
    await r.progress(50)
    opts: dict[str, object] = {"type": p.format, "animations": "disabled"}
    if p.quality is not None:
        opts["quality"] = p.quality
    if p.selector is not None:
        element = await page.wait_for_selector(p.selector, timeout=r.timeout_ms)
        if element is None:
            raise TaskError("SelectorNotFound", f"no element matches {p.selector!r}", False)
        image = await element.screenshot(**opts)
    else:
        image = await page.screenshot(full_page=p.full_page, **opts)
    name = f"screenshot.{p.format}"
    r.evidence.add(name, image, f"image/{p.format}")
    width, height = imagediff.size(image)
    data: dict[str, object] = {
        "url": page.url, "status": status, "artifact": name, "width": width, "height": height,
        "bytes": len(image), "perceptualHash": imagediff.perceptual_hash(image),
    }  # fmt: skip
    if p.baseline is None:
        return Outcome(data)
    if p.baseline.url is not None:
        baseline = await fetch(p.baseline.url, r.proxy_url, r.timeout_ms)
    else:
        baseline = await stored(r, p)
    ratio, diff_png = imagediff.diff(baseline, image, p.baseline.pixel_tolerance)
    passed = ratio <= p.baseline.max_diff_ratio
    data["visual"] = {"diffRatio": round(ratio, 6), "maxDiffRatio": p.baseline.max_diff_ratio,
                      "passed": passed, "baselineSize": list(imagediff.size(baseline))}  # fmt: skip
    if diff_png is not None:
        r.evidence.add("diff.png", diff_png, "image/png")
    failure = None
    if not passed:
        failure = f"{ratio:.4%} of pixels differ from the baseline (allowed {p.baseline.max_diff_ratio:.4%})"
    return Outcome(data, {"diffRatio": ratio}, failure)


async def stored(r: Run, p: Screenshot) -> bytes:
    """baseline.artifact: another task's artifact, from the webhook service (not through
    the egress proxy: the service is where this attempt calls back)."""
    assert p.baseline is not None and p.baseline.artifact is not None
    src = f"{p.baseline.artifact.task}/{p.baseline.artifact.name}"
    if r.read_baseline is None:
        raise TaskError("BaselineUnavailable", f"baseline {src}: no webhook service to ask", False)
    try:
        return await r.read_baseline(BASELINE_LIMIT)
    except CallbackRejected as e:
        retry = e.status >= 500 or e.status in (408, 429)
        code = "UserError" if e.status == 413 else "BaselineUnavailable"
        raise TaskError(code, f"baseline {src}: {message_of(e)}", retry) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        raise TaskError("BaselineUnavailable", f"baseline {src}: {e}", True) from e


def message_of(e: CallbackRejected) -> str:
    """The service's own words (its JSON error's message) where it gave them."""
    try:
        return str(json.loads(e.body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(e)


async def fetch(url: str, proxy: str, timeout_ms: float) -> bytes:
    """The baseline image, through the egress proxy like everything the browser loads."""
    timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url, proxy=proxy) as resp:
            if resp.status == 407:
                raise TaskError(
                    "NavigationBlocked", f"baseline {url}: refused by the egress policy", False
                )
            if resp.status != 200:
                raise TaskError("BaselineUnavailable", f"baseline {url}: HTTP {resp.status}", True)
            body = b""
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > BASELINE_LIMIT:
                    break
    except aiohttp.ClientError as e:
        raise TaskError("BaselineUnavailable", f"baseline {url}: {e}", True) from e
    if len(body) > BASELINE_LIMIT:
        raise TaskError("UserError", f"baseline {url} is larger than {BASELINE_LIMIT} bytes", False)
    return body
