"""A fault-injecting proxy between our components and the API server (tests, benchmarks).

    python hack/faultproxy.py --upstream https://127.0.0.1:6443 --ca ca.crt --port 7000

Our components reach it through their ordinary kubeconfig (``server:
http://127.0.0.1:7000``; ``kubeconfig_via``), so nothing in production code knows it
exists. It forwards every request, with the caller's own credentials, and on the way
does what a struggling API server does, each with its own probability:

- ``error``: answer 500, 503 or 429 (with Retry-After: ``retry_after`` seconds) without
  forwarding; ``codes`` narrows the choice;
- ``applied_then_error``: forward a write, then answer 500 although it was applied;
- ``slow`` / ``slow_seconds``: hold the answer back (latency spikes);
- ``reset``: forward, then cut the connection before the body is complete;
- ``watch_cut`` ``[min, max]``: end each watch stream after that many events;
- ``watch_gone``: answer a watch resumed from a resourceVersion with 410 Gone, as the
  API server does when the version is too old (a 200 stream with one ERROR event).

``only`` (a regular expression) limits faults to matching "METHOD path" lines. The
faults change at run time (``PUT /__faults`` with JSON), and ``GET /__stats`` counts
what was injected. Loopback only: it listens on 127.0.0.1 and forwards to the one
upstream it was given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
       "proxy-connection", "te", "trailer"}  # fmt: skip
# Bodies pass through as the API server encoded them (gzip included): auto_decompress off.
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Faults:
    error: float = 0.0
    codes: tuple[int, ...] = (500, 503, 429)
    retry_after: int = 1
    applied_then_error: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.5
    reset: float = 0.0
    watch_cut: tuple[int, int] | None = None
    watch_gone: float = 0.0
    only: str = ""

    def matches(self, line: str) -> bool:
        return not self.only or re.search(self.only, line) is not None


@dataclass
class Proxy:
    upstream: str
    ca: Path | None
    faults: Faults = field(default_factory=Faults)
    stats: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[float, str, int]] = field(default_factory=list)  # (time, line, code)
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311
    session: ClientSession | None = None

    def chance(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    async def client(self) -> ClientSession:
        if self.session is None:
            ctx = ssl.create_default_context(cafile=str(self.ca)) if self.ca else False
            self.session = ClientSession(
                connector=TCPConnector(ssl=ctx, limit=256),
                timeout=ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
            )
        return self.session

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "PUT":
            body = await request.json()
            if body.get("watch_cut") is not None:
                body["watch_cut"] = tuple(body["watch_cut"])
            if body.get("codes") is not None:
                body["codes"] = tuple(body["codes"])
            self.faults = Faults(**body)
        if request.path == "/__stats":
            return web.json_response(dict(self.stats))
        if request.path == "/__errors":
            return web.json_response(self.errors)
        return web.json_response(asdict(self.faults))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in ("/__faults", "/__stats", "/__errors"):
            return await self.control(request)
        f = self.faults
        line = f"{request.method} {request.path}"
        watch = request.query.get("watch") in ("1", "true")
        self.stats["requests"] += 1
        faulty = f.matches(line)
        if faulty and not watch and self.chance(f.error):
            code = self.rng.choice(f.codes)
            self.stats[f"error-{code}"] += 1
            self.errors.append((time.time(), line, code))
            headers = {"Retry-After": str(f.retry_after)} if code in (429, 503) else {}
            return web.json_response(status_body(code), status=code, headers=headers)
        resumed = request.query.get("resourceVersion") not in (None, "", "0")
        if faulty and watch and resumed and self.chance(f.watch_gone):
            self.stats["watch-gone"] += 1
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            gone = {"type": "ERROR", "object": status_body(410, "too old resource version")}
            await resp.write(json.dumps(gone).encode() + b"\n")
            await resp.write_eof()
            return resp
        if faulty and self.chance(f.slow):
            self.stats["slow"] += 1
            await asyncio.sleep(f.slow_seconds)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        s = await self.client()
        try:
            async with s.request(request.method, self.upstream + request.path_qs, headers=headers,
                                 data=body or None, allow_redirects=False) as up:  # fmt: skip
                if faulty and request.method in WRITES and self.chance(f.applied_then_error):
                    await up.read()
                    self.stats["applied-then-error"] += 1
                    return web.json_response(status_body(500), status=500)
                out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
                resp = web.StreamResponse(status=up.status, headers=out)
                await resp.prepare(request)
                if watch:
                    await self.stream_watch(up, resp, faulty)
                    return resp
                if faulty and self.chance(f.reset):
                    self.stats["reset"] += 1
                    chunk = await up.content.read(64)
                    await resp.write(chunk)
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                async for chunk in up.content.iter_chunked(65536):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # the upstream is down (restarting): what a client would see
            self.stats["upstream-down"] += 1
            return web.json_response(status_body(503, str(e)), status=503)

    async def stream_watch(self, up: Any, resp: web.StreamResponse, faulty: bool) -> None:
        cut = self.faults.watch_cut
        limit = self.rng.randint(*cut) if faulty and cut else None
        n = 0
        async for line in up.content:
            await resp.write(line)
            n += 1
            if limit is not None and n >= limit:
                self.stats["watch-cut"] += 1
                break
        await resp.write_eof()


def status_body(code: int, message: str = "injected by hack/faultproxy.py") -> dict[str, Any]:
    reason = {410: "Gone", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason.get(code, "InternalError"), "code": code}  # fmt: skip


async def serve(upstream: str, ca: Path | None, port: int, faults: Faults) -> None:
    proxy = Proxy(upstream.rstrip("/"), ca, faults)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- for tests and benchmarks ---------------------------------------------------------------


@dataclass
class FaultProxy:
    """A running proxy process and how to steer it."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, **faults: Any) -> None:
        self._call("PUT", "/__faults", faults)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = self._call("GET", "/__stats")
        return out

    def errors(self) -> list[tuple[float, str, int]]:
        """(time, "METHOD path", code) of every error answer given so far."""
        return [(t, line, code) for t, line, code in self._call("GET", "/__errors")]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback http)
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(upstream: str, ca: Path, port: int) -> FaultProxy:
    proc = subprocess.Popen([sys.executable, __file__, "--upstream", upstream, "--ca", str(ca),
                             "--port", str(port)])  # fmt: skip
    p = FaultProxy(proc, port)
    deadline = time.monotonic() + 30
    while True:
        try:
            p.stats()
            return p
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fault proxy did not start") from None
            time.sleep(0.1)


def kubeconfig_via(proxy_url: str, kubeconfig: Path, out: Path) -> Path:
    """A copy of a token kubeconfig whose server is the proxy (plain http on loopback)."""
    cfg = json.loads(kubeconfig.read_text())
    for c in cfg["clusters"]:
        c["cluster"] = {"server": proxy_url}
    out.write_text(json.dumps(cfg))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--ca", type=Path)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--faults", default="{}", help="initial faults as JSON")
    a = p.parse_args()
    asyncio.run(serve(a.upstream, a.ca, a.port, Faults(**json.loads(a.faults))))


if __name__ == "__main__":
    main()
