"""The SDK's delivery under an overloaded service (a real aiohttp server on loopback): a
final result is retried until the attempt's deadline, a progress report a few times,
never sooner than Retry-After."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from wallestars_sdk import AgentClient, AgentConfig
from wallestars_sdk.client import CallbackRejected

OK = {"acknowledged": True, "nextAction": "none"}


class Service:
    """Answers 503 (with ``retry_after``) ``busy`` times, then 200; records arrivals."""

    def __init__(self, busy: int, retry_after: str | None = None) -> None:
        self.busy, self.retry_after, self.arrivals = busy, retry_after, []  # type: ignore[var-annotated]

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.busy:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": "busy"}, status=503, headers=headers)
        return web.json_response(OK)


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    servers: list[TestServer] = []

    async def start(svc: Service, deadline: float = 60, attempts: int = 2) -> AgentClient:
        app = web.Application()
        app.router.add_post("/api/agent-callback", svc.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        cfg = AgentConfig(callback_url=str(server.make_url("/api/agent-callback")), task_uid="u",
                          task_namespace="ns", task_name="t", attempt=1, key_file=Path("/unused"),
                          send_attempts=attempts, timeout_seconds=deadline)  # fmt: skip
        return AgentClient(cfg, b"k" * 32)

    yield start
    for s in servers:
        await s.close()


async def test_a_final_result_outlasts_the_tries_a_progress_report_gets(serve) -> None:  # type: ignore[no-untyped-def]
    final = Service(busy=3)
    async with await serve(final) as agent:
        await agent.succeed({"ok": True})
    assert len(final.arrivals) == 4  # 3 refusals and the delivery, beyond send_attempts=2

    progress = Service(busy=3)
    async with await serve(progress) as agent:
        with pytest.raises(CallbackRejected):
            await agent.progress(50)
    assert len(progress.arrivals) == 2


async def test_retry_after_is_never_cut_short(serve) -> None:  # type: ignore[no-untyped-def]
    svc = Service(busy=2, retry_after="1")
    async with await serve(svc) as agent:
        await agent.succeed()
    gaps = [b - a for a, b in zip(svc.arrivals, svc.arrivals[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 1.0, gaps


async def test_a_final_result_gives_up_at_the_attempts_deadline(serve) -> None:  # type: ignore[no-untyped-def]
    svc = Service(busy=10_000)
    t0 = time.monotonic()
    async with await serve(svc, deadline=3) as agent:  # gives up 2 s after the start
        with pytest.raises(CallbackRejected):
            await agent.succeed()
    assert time.monotonic() - t0 < 3.0
    assert len(svc.arrivals) >= 3
