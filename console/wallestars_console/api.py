"""The application API: REST over AgentTasks and Agents, live updates over Server-Sent
Events and WebSocket, an OpenAPI document.

Every request acts as its caller: the bearer token it brings is forwarded to the API
server with each call (list, get, create, watch), so Kubernetes RBAC decides what the
caller sees and does, never this service's own rights (it has none over AgentTasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from wallestars_api.kubeclient import ApiError, KubeClient

from wallestars_console import live, metrics
from wallestars_console import tasks as t
from wallestars_console.config import Settings
from wallestars_console.openapi import document
from wallestars_console.sessions import SEALER, Sealer, session_of, token_of

log = logging.getLogger("wallestars.console.api")
K8S_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
MAX_BODY = 256 * 1024
CLIENT_KEY = web.AppKey("kube", KubeClient)
HUB_KEY = web.AppKey("hub", live.Hub)
KEEPALIVE_KEY = web.AppKey("keepalive", float)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, reason: str, message: str, field: str = "", **extra: Any) -> web.Response:
    err: dict[str, Any] = {"code": status, "reason": reason, "message": message, "fields": []}
    if field:
        err["fields"] = [{"field": field, "reason": "FieldValueInvalid", "message": message}]
    return web.json_response({"error": err | extra}, status=status)


def from_api_error(e: ApiError) -> web.Response:
    """The API server's answer, passed on in the request's terms; never a 5xx of ours
    for the caller's mistake."""
    status = e.code if 400 <= e.code < 600 else 502
    if status in (401, 403):
        reason = "Unauthorized" if status == 401 else "Forbidden"
        return web.json_response(t.refusal(status, reason, e.message, []), status=status)
    if status >= 500:  # the API server's trouble, not ours: say so, ask to retry
        body = t.refusal(503, "ApiServerUnavailable", e.message, [])
        return web.json_response(body, status=503, headers={"Retry-After": "2"})
    return web.json_response(t.refusal(status, e.reason, e.message, e.causes), status=status)


@web.middleware
async def measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "other"
    )
    t0 = time.perf_counter()
    code = 500
    try:
        resp = await handler(request)
        code = resp.status
        return resp
    except web.HTTPException as e:
        code = e.status
        raise
    finally:
        metrics.REQUESTS.labels(route, str(code)).inc()
        metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - t0)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ApiError as e:
        return from_api_error(e)
    except t.BadRequest as e:
        return problem(400, "BadRequest", str(e), e.field)
    except live.StreamEnded as e:
        return web.json_response(t.refusal(e.code, e.reason, e.message, []), status=e.code)
    except (aiohttp.ClientError, TimeoutError) as e:
        log.warning("API server unreachable: %s", e)
        return problem(
            503, "ApiServerUnavailable", "the Kubernetes API server did not answer; try again"
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(
            500, "InternalError", "the console failed; nothing was changed by this request"
        )


def caller_token(request: web.Request) -> str | None:
    """A token sent with the request, or the signed-in person's (the console's pages call
    the API with their session cookie; a change made so must carry X-CSRF-Token)."""
    given = token_of(request)
    if given is not None:
        return given
    if (s := session_of(request)) is not None:
        if request.method not in ("GET", "HEAD") and not request.app[SEALER].csrf_ok(
            s, request.headers.get("X-CSRF-Token")
        ):
            return None
        return s.token
    return None


def authenticated(fn: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if caller_token(request) is None:
            return web.json_response(
                t.refusal(401, "Unauthorized", "send Authorization: Bearer <a token the Kubernetes API server accepts>", []),
                status=401, headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return await fn(request)

    return wrapped


def kube(request: web.Request) -> KubeClient:
    return request.app[CLIENT_KEY]


@authenticated
async def create_task(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return problem(413, "TooLarge", f"the body is limited to {MAX_BODY} bytes")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return problem(400, "BadRequest", "the body is not JSON")
    manifest = t.to_task(body)
    created = await kube(request).request(
        "POST", t.tasks_path(ns), manifest, token=caller_token(request)
    )
    return web.json_response(t.view(created), status=201,
                             headers={"Location": f"/api/v1/namespaces/{ns}/tasks/{created['metadata']['name']}"})  # fmt: skip


@authenticated
async def get_task(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    obj = await kube(request).request(
        "GET", t.tasks_path(m["namespace"], m["name"]), token=caller_token(request)
    )
    return web.json_response(t.view(obj))


@authenticated
async def list_tasks(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    params = t.selectors(request.query)
    out = await kube(request).request(
        "GET", t.tasks_path(ns), params=params, token=caller_token(request)
    )
    meta = out.get("metadata") or {}
    return web.json_response({"items": [t.view(o) for o in out.get("items") or []],
                              "continue": meta.get("continue", ""),
                              "remaining": meta.get("remainingItemCount")})  # fmt: skip


@authenticated
async def act_on_task(request: web.Request) -> web.StreamResponse:
    """cancel, suspend, resume: the spec's own switches, patched as the caller."""
    m = request.match_info
    patch = {"cancel": {"spec": {"cancel": True}}, "suspend": {"spec": {"suspend": True}},
             "resume": {"spec": {"suspend": False}}}[m["action"]]  # fmt: skip
    obj = await kube(request).request("PATCH", t.tasks_path(m["namespace"], m["name"]), patch,
                                      "application/merge-patch+json", token=caller_token(request))  # fmt: skip
    return web.json_response(t.view(obj))


@authenticated
async def list_agents(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    out = await kube(request).request("GET", t.agents_path(ns), token=caller_token(request))
    return web.json_response({"items": [t.agent_view(o) for o in out.get("items") or []]})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# --- live updates (live.py: one watch per namespace, each stream authorized as its caller)


def hub(request: web.Request) -> live.Hub:
    return request.app[HUB_KEY]


def wants_snapshot(request: web.Request) -> bool:
    """snapshot=false: only what changes from now on (a page that has just drawn the list)."""
    return request.query.get("snapshot", "true").lower() not in ("false", "0", "no")


@authenticated
async def sse(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    token = caller_token(request)
    assert token is not None
    kinds = await hub(request).authorize(token, ns)
    keepalive = request.app[KEEPALIVE_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})  # fmt: skip
    await resp.prepare(request)
    metrics.STREAMS.inc()
    try:
        async with hub(request).follow(token, ns, kinds, wants_snapshot(request)) as stream:
            while True:
                try:
                    batch = await asyncio.wait_for(stream.next_batch(), keepalive)
                except TimeoutError:
                    # A comment: proxies keep the stream open, and a client that has gone
                    # is found (the write fails) and its stream let go.
                    await resp.write(b": keep-alive\n\n")
                    continue
                await resp.write(b"".join(ev.sse_bytes() for ev in batch))
    except live.StreamEnded as why:  # said as an event: the status line is long gone
        with contextlib.suppress(ConnectionResetError):
            await resp.write(f"event: error\ndata: {json.dumps(vars_of(why))}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        metrics.STREAMS.dec()
    return resp


def vars_of(why: live.StreamEnded) -> dict[str, Any]:
    return {"code": why.code, "reason": why.reason, "message": why.message}


@authenticated
async def websocket(request: web.Request) -> web.StreamResponse:
    ns = request.query.get("namespace", "")
    if not re.fullmatch(K8S_NAME, ns):
        return problem(
            400, "BadRequest", "namespace= (a namespace you may read) is required", "namespace"
        )
    token = caller_token(request)
    assert token is not None
    kinds = await hub(request).authorize(token, ns)
    offered = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    ws = web.WebSocketResponse(protocols=[p for p in offered if p == "wallestars.v1"], heartbeat=30)
    await ws.prepare(request)
    metrics.STREAMS.inc()

    async def send() -> None:
        try:
            async with hub(request).follow(token, ns, kinds, wants_snapshot(request)) as stream:
                while not ws.closed:
                    for ev in await stream.next_batch():
                        await ws.send_str(ev.ws_text())
        except live.StreamEnded as why:  # 4000 + the HTTP status: 4401, 4403, 4503
            # A close reason is at most 123 bytes: cut the bytes, not the characters.
            reason = why.message.encode()[:120].decode(errors="ignore").encode()
            await ws.close(code=4000 + min(why.code, 999), message=reason)
        finally:  # however sending ends, the reader below ends with it
            await ws.close()

    # The client says nothing, but reading is how its close (or its going away) is seen.
    sender = asyncio.create_task(send())
    try:
        async for _ in ws:
            pass
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await sender
        metrics.STREAMS.dec()
        await ws.close()
    return ws


def routes(app: web.Application) -> None:
    ns = "/api/v1/namespaces/{namespace:" + K8S_NAME + "}"
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_post(ns + "/tasks", create_task)
    app.router.add_get(ns + "/tasks", list_tasks)
    app.router.add_get(ns + "/tasks/{name:" + K8S_NAME + "}", get_task)
    app.router.add_post(
        ns + "/tasks/{name:" + K8S_NAME + "}/{action:cancel|suspend|resume}", act_on_task
    )
    app.router.add_get(ns + "/agents", list_agents)
    app.router.add_get(ns + "/events", sse)
    app.router.add_get("/api/v1/ws", websocket)


def make_app(
    client: KubeClient,
    settings: Settings | None = None,
    own_client: KubeClient | None = None,
    watch_client: KubeClient | None = None,
) -> web.Application:
    """The API, and the pages (ui.py) on the same port. ``client`` carries callers'
    tokens; ``own_client`` (the console's identity) only the shared watches, if given."""
    from wallestars_console import ui

    s = settings or Settings()
    app = web.Application(
        middlewares=[measured, ui.security_headers, errors], client_max_size=MAX_BODY
    )
    app[CLIENT_KEY] = client
    app[KEEPALIVE_KEY] = s.stream_keepalive_seconds
    app[HUB_KEY] = live.Hub(client, own_client, frozenset(s.shared_namespaces),
                            s.stream_recheck_seconds, watch_client)  # fmt: skip
    app[ui.KUBE] = client
    key = s.session_key_file.read_bytes().strip() if s.session_key_file else os.urandom(32)
    app[SEALER] = Sealer(key, s.session_max_age_seconds)
    app[ui.ARTIFACTS] = s.artifacts_url
    app[ui.ARTIFACT_SSL] = (ssl.create_default_context(cafile=str(s.artifacts_ca_file))
                            if s.artifacts_ca_file else None)  # fmt: skip
    routes(app)
    ui.routes(app)

    async def close(_: web.Application) -> None:
        await app[HUB_KEY].close()
        await client.close()
        for other in (own_client, watch_client):
            if other is not None:
                await other.close()

    app.on_cleanup.append(close)
    return app
