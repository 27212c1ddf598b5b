"""The kubelet's log endpoint, so `kubectl logs` works through the API server.

The API server proxies ``pods/log`` to ``https://<node InternalIP>:<kubeletEndpoint>/
containerLogs/{namespace}/{pod}/{container}`` with its kubelet client certificate;
only callers with a certificate from the cluster CA are served.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from node_standin.node import NodeStandin


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def start_log_server(node: NodeStandin) -> web.AppRunner:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        uid = node.by_name.get((ns, pod))
        if uid is None:
            raise web.HTTPNotFound(text=f"pod {ns}/{pod} has never run on this node\n")
        path = node.cfg.root / "logs" / f"{ns}_{pod}_{uid}" / f"{container}.log"
        if not path.exists():
            raise web.HTTPNotFound(text=f"container {container} of {ns}/{pod} has no log\n")
        q = request.query
        data = path.read_bytes()
        if "tailLines" in q:
            data = _tail(data, int(q["tailLines"]))
        if "limitBytes" in q:
            data = data[: int(q["limitBytes"])]
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        if q.get("follow") in ("true", "1"):
            offset = path.stat().st_size
            while True:
                pr = node.pods.get(uid)
                running = pr is not None and any(
                    c.name == container and c.proc is not None and c.proc.returncode is None
                    for c in pr.containers + pr.init
                )
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    await resp.write(chunk)
                if not running:
                    break
                await asyncio.sleep(0.2)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", container_logs)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))  # type: ignore[arg-type,return-value]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    cfg = node.cfg
    ctx = None
    if cfg.tls_cert and cfg.tls_key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        if cfg.client_ca:
            ctx.load_verify_locations(str(cfg.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    await web.TCPSite(runner, "127.0.0.1", cfg.kubelet_port, ssl_context=ctx).start()
    return runner
