"""The webhook service: routes, health, metrics, and a runner with safe timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from wallestars_api.events import EventQueue
from wallestars_api.tls import ServerTLS, client_cert_problem
from wallestars_sdk.keys import parse_master_keys
from wallestars_sdk.signing import SignatureError

from wallestars_webhooks import metrics as metrics_
from wallestars_webhooks.artifacts import ArtifactHandlers, FilesystemStore, S3Store, Store
from wallestars_webhooks.callbacks import CallbackHandler, key_identity
from wallestars_webhooks.config import Settings
from wallestars_webhooks.http import error
from wallestars_webhooks.kube import Kube, make_client

log = logging.getLogger("wallestars.webhooks")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def never_500_for_input(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unexpected failures are ours, logged with context; the client gets JSON, not a trace."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(
            500,
            "internal-error",
            "the service failed; the request changed nothing it did not acknowledge",
        )


OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def transport_security(s: Settings) -> Middleware:
    """With TLS on, the plain listener serves health and metrics only; under mutual TLS a
    callback, an artifact upload or a baseline read comes over a connection whose client
    certificate names its attempt (HMAC still verified after)."""
    tls = s.tls_cert_file is not None
    mutual = s.tls_client_ca_file is not None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tls:
            return await handler(request)
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if ssl_object is None:
            if request.path in OPS_PATHS:
                return await handler(request)
            return error(
                403, "https-required", "callbacks and artifacts are served over HTTPS only"
            )
        signed_read = request.path.startswith("/api/baseline/")
        if mutual and (request.method in ("POST", "PUT") or signed_read):
            try:
                if request.method == "PUT" or signed_read:
                    uid, attempt = request.match_info["uid"], int(request.match_info["attempt"])
                else:
                    uid, attempt = key_identity(request)
            except (KeyError, ValueError, SignatureError):
                return await handler(request)  # malformed: the handler says what is wrong
            why = client_cert_problem(ssl_object.getpeercert(), uid, attempt)
            if why:
                return error(401, "client-certificate", why)
        return await handler(request)

    return check


def make_store(s: Settings) -> Store:
    if s.artifact_store == "s3":
        if not s.s3_bucket:
            raise ValueError("WALLESTARS_S3_BUCKET is required with WALLESTARS_ARTIFACT_STORE=s3")
        return S3Store(s.s3_bucket, s.s3_prefix, s.s3_endpoint_url, spool_dir(s))
    s.artifact_dir.mkdir(parents=True, exist_ok=True)
    return FilesystemStore(s.artifact_dir)


def spool_dir(s: Settings) -> Path:
    """Where uploads and S3 downloads are spooled: beside the files, so keeping one is a rename."""
    d = s.artifact_dir / ".spool"
    d.mkdir(parents=True, exist_ok=True)
    return d


def create_app(s: Settings, kube: Kube | None = None) -> web.Application:
    masters = parse_master_keys(s.master_keys_file.read_text())
    app = web.Application(
        middlewares=[never_500_for_input, transport_security(s)], client_max_size=s.max_body_bytes
    )
    ready: dict[str, bool] = {"api": False}

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        k = kube or Kube(make_client(s.kubeconfig))
        events = EventQueue(k.event, dropped=metrics_.EVENTS_DROPPED.inc)
        events.start()
        callbacks = CallbackHandler(k, masters, s, events)
        arts = ArtifactHandlers(k, masters, make_store(s), s, spool_dir(s))
        handlers["callback"] = callbacks
        handlers["put"] = arts.put
        handlers["get"] = arts.get
        handlers["baseline"] = arts.baseline

        async def probe() -> None:
            while True:
                ready["api"] = await k.reachable()
                await asyncio.sleep(s.readiness_interval_seconds)

        task = asyncio.create_task(probe())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await events.close()
        if kube is None:
            await k.client.close()

    handlers: dict[str, Handler] = {}

    async def callback(request: web.Request) -> web.StreamResponse:
        return await handlers["callback"](request)

    async def put_artifact(request: web.Request) -> web.StreamResponse:
        return await handlers["put"](request)

    async def get_artifact(request: web.Request) -> web.StreamResponse:
        return await handlers["get"](request)

    async def baseline(request: web.Request) -> web.StreamResponse:
        return await handlers["baseline"](request)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if ready["api"]:
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"status": "not ready", "reason": "the Kubernetes API server is unreachable"},
            status=503,
            headers={"Retry-After": str(int(s.readiness_interval_seconds))},
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.cleanup_ctx.append(lifecycle)
    path = "/api/artifacts/{namespace}/{name}/{uid}/{attempt}/{artifact}"
    app.router.add_post("/api/agent-callback", callback)
    app.router.add_put(path, put_artifact)
    app.router.add_get(path, get_artifact)
    app.router.add_get("/api/baseline/{namespace}/{name}/{uid}/{attempt}", baseline)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(s: Settings) -> None:
    app = create_app(s)
    # aiohttp's defaults keep idle connections for an hour and linger 10 s reading
    # refused bodies; a slow or idle client must not hold the service.
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=s.keepalive_timeout_seconds,
        lingering_time=0,
        max_line_size=8190,
        max_field_size=8190,
    )
    await runner.setup()
    tls = None
    if s.tls_cert_file is not None:
        if s.tls_key_file is None:
            raise ValueError("WALLESTARS_TLS_KEY_FILE is required with WALLESTARS_TLS_CERT_FILE")
        tls = ServerTLS(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
    site = web.TCPSite(
        runner, s.host, s.port, backlog=1024, ssl_context=tls.context if tls else None
    )
    await site.start()
    log.info("listening on %s:%d (%s)", s.host, s.port,
             "mutual TLS" if s.tls_client_ca_file else "TLS" if tls else "plain HTTP")  # fmt: skip
    if s.ops_port:
        await web.TCPSite(runner, s.host, s.ops_port).start()
        log.info("health and metrics on %s:%d", s.host, s.ops_port)
    reload = asyncio.create_task(reload_tls(tls, s.tls_reload_seconds)) if tls else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if reload is not None:
        reload.cancel()
    await runner.cleanup()


async def reload_tls(tls: ServerTLS, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(tls.reload_if_changed)
