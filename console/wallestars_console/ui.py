"""The console's pages: server-rendered, each made with the signed-in person's token.

Sign-in takes a bearer token the API server accepts (checked with a SelfSubjectReview,
which tells who it is) and seals it in an HttpOnly, Secure, SameSite=Strict cookie; an
authenticating proxy in front may send `Authorization: Bearer` instead. Every form that
changes something carries the session's CSRF token. Pages work without JavaScript;
console.js (no inline script, a strict Content-Security-Policy) only makes the lists
and a task's page follow changes live over the API's event stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jinja2
from aiohttp import web
from wallestars_api.kubeclient import ApiError, KubeClient
from wallestars_api.resources import API_VERSION

from wallestars_console import graph, results
from wallestars_console import tasks as t
from wallestars_console.sessions import (
    COOKIE,
    SEALER,
    Session,
    cookie_attributes,
    session_of,
    token_of,
)

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
KUBE = web.AppKey("ui-kube", KubeClient)
ARTIFACTS = web.AppKey(
    "artifacts", str
)  # the webhook service's base URL, as the console reaches it
ARTIFACT_SSL = web.AppKey("artifact-ssl", object)
TYPES = (
    "screenshot",
    "scrape",
    "e2e-test",
    "performance",
    "accessibility",
    "api-test",
    "echo",
    "custom",
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/ui"):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def page(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    s = session_of(request)
    html = env.get_template(template).render(
        user=s.user if s else ctx.pop("user", ""), csrf=request.app[SEALER].csrf(s) if s else "",
        ns=ctx.pop("ns", request.match_info.get("namespace", "")), **ctx)  # fmt: skip
    return web.Response(text=html, content_type="text/html", status=status)


def caller(request: web.Request) -> tuple[str, Session | None] | None:
    """The signed-in person's token (cookie), or an authenticating proxy's header."""
    s = session_of(request)
    if s is not None:
        return s.token, s
    given = token_of(request)
    return (given, None) if given is not None else None


def signed_in(fn: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = caller(request)
        if who is None:
            raise web.HTTPSeeOther("/ui/login?" + urlencode({"next": request.path_qs}))
        if request.method == "POST" and who[1] is not None:
            form = await request.post()
            if not request.app[SEALER].csrf_ok(who[1], str(form.get("csrf", "")) or None):
                return page(request, "error.html", 403, title="Refused",
                            message="This form is not from this session (CSRF check). Reload the page and try again.")  # fmt: skip
        try:
            return await fn(request)
        except ApiError as e:
            if e.code == 401:
                resp = web.HTTPSeeOther("/ui/login?expired=1")
                resp.del_cookie(COOKIE, path="/")
                raise resp from None
            return page(request, "error.html", e.code if 400 <= e.code < 500 else 503,
                        title=f"{e.code} {e.reason}", message=e.message)  # fmt: skip

    return wrapped


def token(request: web.Request) -> str:
    who = caller(request)
    assert who is not None
    return who[0]


def kube(request: web.Request) -> KubeClient:
    return request.app[KUBE]


# --- sign-in -------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    msg = "Your session ended; sign in again." if request.query.get("expired") else ""
    return page(
        request, "login.html", message=msg, next=safe_next(request.query.get("next", "")), ns=""
    )


def safe_next(target: str) -> str:
    """Only a path of this console: never another site."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = str(form.get("token", "")).strip()
    nxt = safe_next(str(form.get("next", "")))
    if not given:
        return page(request, "login.html", 400, message="Paste a token.", next=nxt, ns="")
    try:
        review = await kube(request).request(
            "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, token=given)  # fmt: skip
    except ApiError as e:
        why = (
            "The API server did not accept this token."
            if e.code == 401
            else f"The API server said: {e.message}"
        )
        return page(request, "login.html", 401, message=why, next=nxt, ns="")
    user = str(((review.get("status") or {}).get("userInfo") or {}).get("username", "?"))
    sealer = request.app[SEALER]
    cookie, _ = sealer.seal(given, user, time.time())
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(COOKIE, cookie, **cookie_attributes(sealer.max_age))  # type: ignore[arg-type]
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    s = session_of(request)
    form = await request.post()
    if s is not None and not request.app[SEALER].csrf_ok(s, str(form.get("csrf", "")) or None):
        return page(request, "error.html", 403, title="Refused", message="CSRF check failed.")
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


@signed_in
async def home(request: web.Request) -> web.StreamResponse:
    ns = request.query.get("namespace", "").strip() or request.cookies.get(
        "wallestars_ns", "default"
    )
    if not t.NAME.fullmatch(ns):
        ns = "default"
    resp = web.HTTPSeeOther(f"/ui/ns/{ns}/tasks")
    resp.set_cookie("wallestars_ns", ns, httponly=True, secure=True, samesite="Strict", path="/ui")
    raise resp


# --- pages -----------------------------------------------------------------------------------


@signed_in
async def agents(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    out = await kube(request).request("GET", t.agents_path(ns), token=token(request))
    return page(request, "agents.html", agents=[t.agent_view(a) for a in out.get("items") or []])


@signed_in
async def task_list(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    q = {
        k: v
        for k, v in request.query.items()
        if k in ("phase", "agent", "type", "labelSelector", "continue", "limit") and v
    }
    try:
        params = t.selectors({"limit": "50", **q})
    except t.BadRequest as e:
        return page(
            request,
            "tasks.html",
            400,
            tasks=[],
            filters=q,
            next="",
            error=str(e),
            phases=t.PHASES,
            types=TYPES,
            since="",
            live=False,
        )
    out = await kube(request).request("GET", t.tasks_path(ns), params=params, token=token(request))
    items = sorted(
        (t.view(o) for o in out.get("items") or []), key=lambda v: v["createdAt"], reverse=True
    )
    cont = (out.get("metadata") or {}).get("continue", "")
    nxt = (
        urlencode({**{k: v for k, v in q.items() if k != "continue"}, "continue": cont})
        if cont
        else ""
    )
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return page(request, "tasks.html", tasks=items, filters=q, next=nxt, error="", phases=t.PHASES, types=TYPES, since=since,
                live=not q.get("continue"))  # fmt: skip


@signed_in
async def task_page(request: web.Request) -> web.StreamResponse:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    obj = await kube(request).request("GET", t.tasks_path(ns, name), token=token(request))
    return page(request, "task.html", **task_context(obj, await events_of(request, obj)))


@signed_in
async def task_results(request: web.Request) -> web.StreamResponse:
    """The results region alone, for console.js to swap in when the task finishes."""
    ns, name = request.match_info["namespace"], request.match_info["name"]
    obj = await kube(request).request("GET", t.tasks_path(ns, name), token=token(request))
    return page(request, "results.html", **task_context(obj, await events_of(request, obj)))


async def events_of(request: web.Request, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    try:
        out = await kube(request).request(
            "GET", f"/api/v1/namespaces/{meta['namespace']}/events",
            params={"fieldSelector": f"involvedObject.uid={meta['uid']}"}, token=token(request))  # fmt: skip
    except ApiError:
        return []  # may read tasks but not Events: the page without them
    return list(out.get("items") or [])


def task_context(obj: Mapping[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    v = t.view(obj)
    data = (v.get("results") or {}).get("data") or {}
    cols, rows = results.table(data.get("data")) if v["type"] == "scrape" else ([], [])
    return {"task": v, "spec": obj.get("spec") or {}, "data": data, "images": results.images(obj),
            "artifacts": results.artifacts(obj), "cols": cols, "rows": rows,
            "violations": results.violations_by_impact(data) if v["type"] == "accessibility" else [],
            "budgets": results.budgets(data) if v["type"] == "performance" else [],
            "timeline": results.timeline(obj, events), "finished": v["status"] in t.PHASES[4:]}  # fmt: skip


@signed_in
async def task_action(request: web.Request) -> web.StreamResponse:
    ns, name, action = (request.match_info[k] for k in ("namespace", "name", "action"))
    if action == "again":
        obj = await kube(request).request("GET", t.tasks_path(ns, name), token=token(request))
        spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in ("cancel", "suspend")}
        base = name.rsplit("-again-", 1)[0][:40]
        made = await kube(request).request("POST", t.tasks_path(ns), {
            "apiVersion": API_VERSION, "kind": "AgentTask",
            "metadata": {"generateName": f"{base}-again-", "labels": (obj["metadata"].get("labels") or {})},
            "spec": spec}, token=token(request))  # fmt: skip
        raise web.HTTPSeeOther(f"/ui/ns/{ns}/tasks/{made['metadata']['name']}")
    patch = {"cancel": {"spec": {"cancel": True}}, "suspend": {"spec": {"suspend": True}},
             "resume": {"spec": {"suspend": False}}}[action]  # fmt: skip
    await kube(request).request(
        "PATCH", t.tasks_path(ns, name), patch, "application/merge-patch+json", token=token(request)
    )
    raise web.HTTPSeeOther(f"/ui/ns/{ns}/tasks/{name}")


@signed_in
async def workflows(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    out = await kube(request).request("GET", f"/apis/{API_VERSION}/namespaces/{ns}/agentworkflows",
                                      params={"limit": "200"}, token=token(request))  # fmt: skip
    items = sorted(
        out.get("items") or [],
        key=lambda w: w["metadata"].get("creationTimestamp", ""),
        reverse=True,
    )
    return page(request, "workflows.html", workflows=[workflow_view(w) for w in items])


def workflow_view(wf: Mapping[str, Any]) -> dict[str, Any]:
    st = wf.get("status") or {}
    return {"name": wf["metadata"]["name"], "phase": st.get("phase", "Pending"), "progress": st.get("progress", ""),
            "active": st.get("active", ""), "reason": st.get("reason", ""), "message": st.get("message", ""),
            "createdAt": wf["metadata"].get("creationTimestamp", ""), "outputs": st.get("outputs") or {}}  # fmt: skip


@signed_in
async def workflow_page(request: web.Request) -> web.StreamResponse:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    wf = await kube(request).request("GET", f"/apis/{API_VERSION}/namespaces/{ns}/agentworkflows/{name}",
                                     token=token(request))  # fmt: skip
    boxes, edges, width, height = graph.layout(wf)
    return page(request, "workflow.html", wf=workflow_view(wf), boxes=boxes, edges=edges, width=width,
                height=height, box_w=graph.BOX_W, box_h=graph.BOX_H)  # fmt: skip


# --- submission --------------------------------------------------------------------------------

FORM_FIELDS = ("name", "type", "agentRef", "priority", "url", "selector", "fullPage", "waitFor",
               "steps", "selectors", "timeoutSeconds", "payload")  # fmt: skip


def form_to_request(form: Mapping[str, str]) -> dict[str, Any]:
    """The submission form as an API request (pure): common payload fields by name, the
    rest as JSON in `payload` (which they override)."""
    body: dict[str, Any] = {"type": form.get("type", "")}
    payload: dict[str, Any] = {}
    raw = form.get("payload", "").strip()
    if raw:
        try:
            loaded = json.loads(raw)
        except ValueError as e:
            raise t.BadRequest(f"payload is not JSON: {e}", "payload") from None
        if not isinstance(loaded, dict):
            raise t.BadRequest("payload must be a JSON object", "payload")
        payload = loaded
    for f in ("url", "selector", "waitFor"):
        if form.get(f, "").strip():
            payload[f] = form[f].strip()
    if form.get("fullPage"):
        payload["fullPage"] = True
    for f in ("steps", "selectors"):
        if form.get(f, "").strip():
            try:
                payload[f] = json.loads(form[f])
            except ValueError as e:
                raise t.BadRequest(f"{f} is not JSON: {e}", f"payload.{f}") from None
    body["payload"] = payload
    if form.get("name", "").strip():
        body["name"] = form["name"].strip()
    if form.get("agentRef", "").strip():
        body["agentRef"] = form["agentRef"].strip()
    for f in ("priority", "timeoutSeconds"):
        v = form.get(f, "").strip()
        if v:
            if not v.lstrip("-").isdigit():
                raise t.BadRequest(f"{f} must be a whole number", f)
            body[f] = int(v)
    return body


@signed_in
async def submit_form(request: web.Request) -> web.StreamResponse:
    return page(
        request,
        "submit.html",
        types=TYPES,
        form={"type": request.query.get("type", "screenshot")},
        errors={},
        message="",
    )


@signed_in
async def submit(request: web.Request) -> web.StreamResponse:
    ns = request.match_info["namespace"]
    raw = await request.post()
    form = {k: str(raw.get(k, "")) for k in FORM_FIELDS if k in raw}
    try:
        body = form_to_request(form)
        manifest = t.to_task(body)
        made = await kube(request).request("POST", t.tasks_path(ns), manifest, token=token(request))
    except t.BadRequest as e:
        return page(request, "submit.html", 400, types=TYPES, form=form,
                    errors={e.field or "form": str(e)}, message="The task was not created.")  # fmt: skip
    except ApiError as e:
        if e.code in (400, 409, 422):
            refused = t.refusal(e.code, e.reason, e.message, e.causes)["error"]
            errors = {f["field"]: f["message"] for f in refused["fields"]} or {"form": e.message}
            return page(request, "submit.html", 422, types=TYPES, form=form, errors=errors,
                        message="The API server refused the task; nothing was created.")  # fmt: skip
        raise
    raise web.HTTPSeeOther(f"/ui/ns/{ns}/tasks/{made['metadata']['name']}")


# --- artifacts -----------------------------------------------------------------------------------


@signed_in
async def artifact(request: web.Request) -> web.StreamResponse:
    """A task's artifact through the webhook service, asked for with the person's token
    (the service checks it may read the task): only an artifact the task's result names."""
    ns, name, wanted = (request.match_info[k] for k in ("namespace", "name", "artifact"))
    obj = await kube(request).request("GET", t.tasks_path(ns, name), token=token(request))
    ref = next((a for a in results.artifacts(obj) if a["name"] == wanted), None)
    path = urlsplit(str(ref.get("uri", ""))).path if ref else ""
    if not path.startswith(f"/api/artifacts/{ns}/{name}/"):
        return page(
            request,
            "error.html",
            404,
            title="Not found",
            message=f"{name} has no artifact {wanted}",
        )
    base = request.app[ARTIFACTS]
    if not base:
        return page(
            request,
            "error.html",
            503,
            title="Unavailable",
            message="artifacts are not configured (WALLESTARS_CONSOLE_ARTIFACTS_URL)",
        )
    ssl_ctx = request.app[ARTIFACT_SSL]
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(
            base.rstrip("/") + path,
            headers={"Authorization": f"Bearer {token(request)}"},
            ssl=ssl_ctx,  # type: ignore[arg-type]
        ) as r,
    ):
        if r.status != 200:
            return page(request, "error.html", r.status if r.status < 500 else 503, title=f"{r.status}",
                        message=(await r.text())[:300])  # fmt: skip
        ctype = r.headers.get("Content-Type", "application/octet-stream")
        inline = ctype in results.IMAGE_TYPES and not request.query.get("download")
        resp = web.StreamResponse(headers={
            "Content-Type": ctype, "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{wanted}"',
            "Content-Security-Policy": "default-src 'none'; sandbox"})  # fmt: skip
        await resp.prepare(request)
        async for chunk in r.content.iter_chunked(64 * 1024):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def root(_: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def routes(app: web.Application) -> None:
    ns = "/ui/ns/{namespace:" + t.NAME.pattern + "}"
    task = ns + "/tasks/{name:" + t.NAME.pattern + "}"
    r = app.router
    r.add_get("/", root)
    r.add_get("/ui/", home)
    r.add_get("/ui/login", login_form)
    r.add_post("/ui/login", login)
    r.add_post("/ui/logout", logout)
    r.add_get(ns + "/agents", agents)
    r.add_get(ns + "/tasks", task_list)
    r.add_get(ns + "/submit", submit_form)
    r.add_post(ns + "/submit", submit)
    r.add_get(task, task_page)
    r.add_get(ns + "/workflows", workflows)
    r.add_get(ns + "/workflows/{name:" + t.NAME.pattern + "}", workflow_page)
    r.add_get(task + "/results", task_results)
    r.add_post(task + "/{action:cancel|suspend|resume|again}", task_action)
    r.add_get(task + "/artifacts/{artifact:[A-Za-z0-9][A-Za-z0-9._-]{0,127}}", artifact)
    r.add_static("/ui/static/", HERE / "static", append_version=True)
