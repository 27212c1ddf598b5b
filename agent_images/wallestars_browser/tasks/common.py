"""What every task type shares: its outcome, the evidence it leaves, opening a page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

LOAD_STATES = ("load", "domcontentloaded", "networkidle", "commit")


class TaskError(Exception):
    """The task cannot go on; ``code`` is the callback's error code."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable


@dataclass
class Outcome:
    """A task's typed result; ``failure`` set when its checks did not pass."""

    data: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str | None = None  # what failed, for the error message (AssertionFailed)


@dataclass
class Evidence:
    """Files to upload as artifacts; kept even when the task fails or is stopped."""

    files: list[tuple[str, bytes, str]] = field(default_factory=list)

    def add(self, name: str, content: bytes, content_type: str) -> None:
        self.files.append((name, content, content_type))


async def open_page(page: Page, url: str, wait_for: str, timeout_ms: float) -> int:
    """Navigate and wait as asked; returns the HTTP status. Refusals and failures raise."""
    state = wait_for if wait_for in LOAD_STATES else "load"
    try:
        response = await page.goto(url, wait_until=state, timeout=timeout_ms)  # type: ignore[arg-type]
    except PlaywrightTimeout as e:
        raise TaskError("NavigationTimeout", f"{url}: {first_line(e)}", True) from e
    except PlaywrightError as e:
        raise TaskError("NavigationFailed", f"{url}: {first_line(e)}", True) from e
    if response is None:
        raise TaskError("NavigationFailed", f"{url}: no response", True)
    proxy_error = (await response.all_headers()).get("x-smokescreen-error")
    if proxy_error and response.status == 407:
        raise TaskError(
            "NavigationBlocked", f"{url}: refused by the egress policy ({proxy_error})", False
        )
    if proxy_error:  # the proxy could not resolve or connect: the page was never reached
        raise TaskError("NavigationFailed", f"{url}: egress proxy: {proxy_error}", True)
    if wait_for not in LOAD_STATES and wait_for:
        try:
            await page.wait_for_selector(wait_for, timeout=timeout_ms)
        except PlaywrightTimeout as e:
            raise TaskError(
                "SelectorTimeout", f"{wait_for!r} did not appear: {first_line(e)}", True
            ) from e
    return response.status


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__


@dataclass
class Run:
    """What a task function gets: its browser context, limits and where evidence goes."""

    context: Any  # playwright BrowserContext
    evidence: Evidence
    proxy_url: str  # every fetch of our own goes through the egress proxy too
    timeout_ms: float
    progress: Callable[[int], Awaitable[None]] = field(default=lambda _: _noop())
    engine: str = "chromium"  # what some results depend on (performance entry types)
    # performance with engine lighthouse: the Chromium's DevTools port, Lighthouse's cli
    debug_port: int | None = None
    lighthouse: str | None = None
    # screenshot with baseline.artifact: the webhook service's copy of it (SDK, signed)
    read_baseline: Callable[[int], Awaitable[bytes]] | None = None


async def _noop() -> None:
    return None
