"""Stock Firefox for Playwright: a WebDriver BiDi relay that answers what Firefox lacks.

Playwright drives a stock Firefox over WebDriver BiDi (its `moz-firefox` channel). Its
driver sends a few commands newer than the Firefox ESR that Debian ships, on every new
context, even when it asks for nothing: today only `emulation.setMediaFeaturesOverride`
with no feature set (we never emulate a colour scheme). Firefox answers "unknown
command" and Playwright gives up on the context. This relay stands between the two:
Playwright starts it as the browser executable; it starts the real Firefox with the same
arguments, relays every message both ways unchanged, and answers those commands itself
only when they ask for no override at all (there is nothing to do). Anything else goes
to Firefox, so a real request for an emulation Firefox lacks still fails loudly.

Run as ``python -m wallestars_browser.bidi_shim --firefox PATH ARGS...`` (launcher()).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


def answer_locally(message: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to give without Firefox, or None to pass the command on (pure)."""
    if message.get("method") != "emulation.setMediaFeaturesOverride":
        return None
    features = (message.get("params") or {}).get("features") or {}
    if any(v is not None for v in features.values()):
        return None  # a real override: Firefox must do it or say it cannot
    return {"type": "success", "id": message.get("id"), "result": {}}


def launcher(directory: Path, firefox: str | None) -> Path:
    """An executable for Playwright's executable_path: this relay in front of `firefox`."""
    script = directory / "firefox-bidi"
    script.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m wallestars_browser.bidi_shim'
        f' --firefox "{firefox or "firefox"}" "$@"\n'
    )
    script.chmod(0o700)
    return script


async def relay(upstream: str, request: web.Request) -> web.WebSocketResponse:
    client = web.WebSocketResponse(max_msg_size=0)
    await client.prepare(request)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(upstream + request.path, max_msg_size=0) as browser,
    ):

        async def to_browser() -> None:
            async for msg in client:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                reply = answer_locally(json.loads(msg.data))
                if reply is not None:
                    await client.send_str(json.dumps(reply))
                else:
                    await browser.send_str(msg.data)
            await browser.close()

        async def to_client() -> None:
            async for msg in browser:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                await client.send_str(msg.data)
            await client.close()

        pumps = [asyncio.create_task(to_browser()), asyncio.create_task(to_client())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for p in pumps:
            p.cancel()
    return client


async def main(args: list[str]) -> int:
    firefox = "firefox"
    if args[:1] == ["--firefox"]:
        firefox, args = args[1], args[2:]
    proc = await asyncio.create_subprocess_exec(firefox, *args, stderr=asyncio.subprocess.PIPE)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proc.send_signal, sig)
    runner: web.AppRunner | None = None
    assert proc.stderr is not None
    async for raw in proc.stderr:
        line = raw.decode(errors="replace")
        found = LISTENING.search(line) if runner is None else None
        if found is None:
            sys.stderr.write(line)
            sys.stderr.flush()
            continue
        upstream = found.group(1).rstrip("/")
        app = web.Application()
        app.router.add_get("/{path:.*}", functools.partial(relay, upstream))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sys.stderr.write(f"WebDriver BiDi listening on ws://127.0.0.1:{port}\n")
        sys.stderr.flush()
    code = await proc.wait()
    if runner is not None:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    return code


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
