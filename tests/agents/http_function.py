"""A tiny HTTPS-function stand-in for tests: an `http` cloud agent's endpoint on loopback.

POST / receives the operator's invocation, answers 202 at once, then reports through
the SDK like a real function would. What it does is steered by the task's
payload.data.behaviour (and payload.data.out, returned as result.data.out): succeed (default), fail-once (fail attempt 1, then succeed),
fail (always), silent (never call back), refuse (answer 500 to the invocation),
slow (call back success after 8 s), duplicate (the success sent twice, the same signed
message: a network or SDK retry), reorder (the success, then a progress callback that
arrives after it), show (progress 30 and 70 a second apart, then success with
a small PNG artifact: what the console shows). An `api-test` task runs the built-in cloud handler
(wallestars_cloud: the requests and assertions, as a deployed function does). GET /invocations/<task uid> says how many times the task was
invoked; GET /invoked-at/<task uid> when (epoch seconds, each time); GET /delivered
which attempts' final results the webhook service acknowledged (2xx), by task uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from wallestars_sdk import AgentClient, AgentConfig
from wallestars_sdk.client import CallbackRejected
from wallestars_sdk.keys import decode_key
from wallestars_sdk.protocol import CallbackStatus, Results

DELIVERED: dict[str, list[int]] = {}  # task uid -> attempts whose final result got a 2xx


async def report(inv: dict[str, Any]) -> None:
    if inv.get("type") == "api-test":
        from wallestars_cloud import handle

        await handle(inv)
        return
    behaviour = ((inv.get("payload") or {}).get("data") or {}).get("behaviour", "succeed")
    if behaviour == "silent":
        return
    if behaviour == "slow":
        await asyncio.sleep(8)
    cfg = AgentConfig(
        callback_url=inv["callbackUrl"], task_uid=inv["task"]["uid"], task_namespace=inv["task"]["namespace"],
        task_name=inv["task"]["name"], attempt=inv["attempt"], agent_id=inv["agentId"],
        key_file=Path(tempfile.gettempdir()) / "unused",
        # Over the chart's HTTPS: its CA, and under mutual TLS the attempt's certificate.
        callback_ca=inv.get("callbackCA", ""),
        client_cert_pem=(inv.get("clientCertificate") or {}).get("cert", ""),
        client_key_pem=(inv.get("clientCertificate") or {}).get("key", ""),
    )  # fmt: skip
    async with AgentClient(cfg, decode_key(inv["key"])) as agent:
        if behaviour == "fail" or (behaviour == "fail-once" and inv["attempt"] == 1):
            await agent.fail("Flaky", f"attempt {inv['attempt']} failed on purpose")
            return
        data = {"attempt": inv["attempt"], "type": inv["type"]}
        if behaviour == "show":
            for pct in (30, 70):
                await agent.progress(pct)
                await asyncio.sleep(1.5)
            art = await agent.upload_artifact("screenshot.png", tiny_png(), "image/png")
            await agent.succeed({**data, "title": "Shop"}, artifacts=[art])
            return
        given = (inv.get("payload") or {}).get("data") or {}
        if "out" in given:  # what the task should return (workflows pass it to later steps)
            data["out"] = given["out"]
        if behaviour == "duplicate":
            body = agent.body(CallbackStatus.SUCCESS, progress=100, results=Results(data=data))
            wid = "msg_" + secrets.token_hex(16)
            await agent.send(body, wid)
            DELIVERED.setdefault(inv["task"]["uid"], []).append(inv["attempt"])
            await agent.send(body, wid)  # the same message again: acknowledged, applied once
            return
        await agent.succeed(data)
        DELIVERED.setdefault(inv["task"]["uid"], []).append(inv["attempt"])
        if behaviour == "reorder":
            # A progress that lost the race with the final result: refused, changes nothing.
            with contextlib.suppress(CallbackRejected, aiohttp.ClientError, TimeoutError):
                await agent.progress(50)


def tiny_png(w: int = 64, h: int = 40) -> bytes:
    """A solid blue PNG, made with the standard library (the function has no PIL)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x00\x66\xcc" * w for _ in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def invoke(request: web.Request) -> web.Response:
    inv = await request.json()
    counts = request.app["invocations"]
    counts[inv["task"]["uid"]] = counts.get(inv["task"]["uid"], 0) + 1
    request.app["times"].setdefault(inv["task"]["uid"], []).append(time.time())
    if ((inv.get("payload") or {}).get("data") or {}).get("behaviour") == "refuse":
        return web.Response(status=500, text="function crashed")
    if request.headers.get("Authorization") != "Bearer test-function-token":
        return web.Response(status=401, text="missing or wrong Authorization")
    request.app["background"].add(asyncio.get_running_loop().create_task(report(inv)))
    return web.json_response({"accepted": True}, status=202)


async def invocations(request: web.Request) -> web.Response:
    return web.json_response(request.app["invocations"].get(request.match_info["uid"], 0))


async def delivered(request: web.Request) -> web.Response:
    return web.json_response(DELIVERED)


async def invoked_at(request: web.Request) -> web.Response:
    return web.json_response(request.app["times"].get(request.match_info["uid"], []))


def main() -> None:
    app = web.Application()
    app["times"] = {}
    app["background"] = set()
    app["invocations"] = {}
    app.router.add_post("/", invoke)
    app.router.add_get("/invocations/{uid}", invocations)
    app.router.add_get("/invoked-at/{uid}", invoked_at)
    app.router.add_get("/delivered", delivered)
    # argv: PORT [HOST] (the real node's address, for the operator's pods to reach it).
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    web.run_app(app, host=host, port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
