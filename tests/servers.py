"""Loopback servers for tests: start an aiohttp app on a free port, and an event loop in a
thread for the synchronous tests that need servers running beside them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


async def serve(app: web.Application, host: str = "127.0.0.1") -> tuple[str, web.AppRunner]:
    """``app`` listening on a free port of ``host``: (base URL, runner to clean up)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return f"http://{host}:{runner.addresses[0][1]}", runner


class Loop:
    """An event loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
