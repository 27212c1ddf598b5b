"""The application API as a process on the real control plane, used by two people with
their own tokens: alice may read namespace A; bob may read A and create tasks in B.
Each sees and does exactly that, because every call is made with the caller's token.
The API is then fuzzed against its own OpenAPI document (schemathesis): no 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import localcluster
import pytest
import yaml
from harness import REPO, Kubectl, free_port, wait_for
from helmlocal import CHART, helm_bin

pytestmark = pytest.mark.cluster


class Console:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path, metrics: str) -> None:
        self.url, self.proc, self.log, self.metrics = url, proc, log, metrics

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(self.metrics, timeout=10).read().decode()  # noqa: S310 (loopback)
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
                   or line.startswith(name + "{"))  # fmt: skip

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)  # noqa: S310 (loopback)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def people(cluster: localcluster.Cluster) -> Iterator[dict[str, Any]]:
    admin = Kubectl(cluster.kubeconfig)
    roles = subprocess.run([str(helm_bin()), "template", "wallestars", str(CHART), "--show-only",
                            "templates/aggregate-roles.yaml"], capture_output=True, text=True, check=True)  # fmt: skip
    admin.apply(roles.stdout)
    a, b = "console-a", "console-b"
    for ns in (a, b, "console-people"):
        admin.run("create", "namespace", ns, check=False)
    people = Kubectl(cluster.kubeconfig, "console-people")
    for who in ("alice", "bob"):
        people.run("create", "serviceaccount", who, check=False)
    Kubectl(cluster.kubeconfig, a)("create", "rolebinding", "alice-view", "--clusterrole=view",
                                   "--serviceaccount=console-people:alice")  # fmt: skip
    Kubectl(cluster.kubeconfig, a)("create", "rolebinding", "bob-view", "--clusterrole=view",
                                   "--serviceaccount=console-people:bob")  # fmt: skip
    Kubectl(cluster.kubeconfig, b)("create", "rolebinding", "bob-edit", "--clusterrole=edit",
                                   "--serviceaccount=console-people:bob")  # fmt: skip
    # carol reads A until her binding is taken away (a stream she holds then ends).
    people.run("create", "serviceaccount", "carol", check=False)
    Kubectl(cluster.kubeconfig, a)("create", "rolebinding", "carol-view", "--clusterrole=view",
                                   "--serviceaccount=console-people:carol")  # fmt: skip
    # The console's own identities: the chart's read-only role, everywhere or in A only.
    chart = subprocess.run([str(helm_bin()), "template", "wallestars", str(CHART), "--show-only",
                            "templates/console.yaml", "--set", "console.enabled=true"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    (watch_role,) = [d for d in yaml.safe_load_all(chart.stdout)
                     if d and d["kind"] == "ClusterRole"]  # fmt: skip
    admin.apply(watch_role)
    for who in ("console-self", "console-narrow"):
        people.run("create", "serviceaccount", who, check=False)
    admin.run("create", "clusterrolebinding", "console-self-watch", f"--clusterrole={watch_role['metadata']['name']}",
              "--serviceaccount=console-people:console-self", check=False)  # fmt: skip
    Kubectl(cluster.kubeconfig, a)("create", "rolebinding", "console-narrow-watch",
                                   f"--clusterrole={watch_role['metadata']['name']}",
                                   "--serviceaccount=console-people:console-narrow")  # fmt: skip
    # dave may read tasks in B, and nothing else (no Agents).
    people.run("create", "serviceaccount", "dave", check=False)
    kb = Kubectl(cluster.kubeconfig, b)
    kb(
        "create",
        "role",
        "tasks-reader",
        "--verb=get,list,watch",
        "--resource=agenttasks.agents.wallestars.io",
    )
    kb(
        "create",
        "rolebinding",
        "dave-tasks",
        "--role=tasks-reader",
        "--serviceaccount=console-people:dave",
    )
    who_all = ("alice", "bob", "carol", "dave", "console-self", "console-narrow")
    tokens = {w: people("create", "token", w, "--duration=2h").strip() for w in who_all}
    # Something for alice to see in A.
    Kubectl(cluster.kubeconfig, a).apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                                          "metadata": {"name": "seen"},
                                          "spec": {"agentRef": "nobody", "type": "echo", "payload": {}}})  # fmt: skip
    yield {"a": a, "b": b, "kubeconfig": cluster.kubeconfig, **tokens}
    for ns in (a, b, "console-people"):
        admin.run("delete", "namespace", ns, "--wait=false", check=False)
    admin.run("delete", "clusterrolebinding", "console-self-watch", check=False)


def identity_kubeconfig(cluster: localcluster.Cluster, token: str, where: Path) -> Path:
    """The cluster's kubeconfig with a ServiceAccount's token as its user: the console's
    own identity (its shared watches), as its pod would have it."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    for u in cfg["users"]:
        u["user"] = {"token": token}
    where.write_text(yaml.safe_dump(cfg))
    return where


def start_console(
    cluster: localcluster.Cluster, tmp: Path, token: str, **settings: str
) -> Iterator[Console]:
    port = free_port()
    log = tmp / "console.log"
    env = {**os.environ, "WALLESTARS_CONSOLE_KUBECONFIG": str(identity_kubeconfig(cluster, token, tmp / "kubeconfig")),
           "WALLESTARS_CONSOLE_HOST": "127.0.0.1", "WALLESTARS_CONSOLE_PORT": str(port),
           "WALLESTARS_CONSOLE_METRICS_PORT": str(metrics := free_port()),
           # Rights are re-checked every 2 s here (60 s by default), so a test sees a revocation.
           "WALLESTARS_CONSOLE_STREAM_RECHECK_SECONDS": "2", "WALLESTARS_CONSOLE_STREAM_KEEPALIVE_SECONDS": "2",
           **{f"WALLESTARS_CONSOLE_{k.upper()}": v for k, v in settings.items()}}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "wallestars_console"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
    c = Console(f"http://127.0.0.1:{port}", proc, log, f"http://127.0.0.1:{metrics}/metrics")

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(log.read_text()[-3000:])
        try:
            return c.call("GET", "/api/openapi.json", None)[0] == 200
        except OSError:
            return False

    wait_for("the console to listen", up, timeout=30)
    yield c
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def console(
    cluster: localcluster.Cluster, people: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """The console as the chart runs it: its own identity may read tasks and agents
    everywhere (the chart's ClusterRole), for one shared watch per namespace."""
    yield from start_console(cluster, tmp_path_factory.mktemp("console"), people["console-self"])


@pytest.fixture(scope="module")
def narrow_console(
    cluster: localcluster.Cluster, people: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """console.liveUpdates.namespaces=[A]: its own identity reads A only; B is followed
    with each caller's own token."""
    yield from start_console(cluster, tmp_path_factory.mktemp("narrow"), people["console-narrow"],
                             shared_namespaces=json.dumps([people["a"]]))  # fmt: skip


def test_each_person_sees_and_does_exactly_what_their_rights_allow(
    console: Console, people: dict[str, Any]
) -> None:
    a, b, alice, bob = people["a"], people["b"], people["alice"], people["bob"]
    status, body = console.call("GET", f"/api/v1/namespaces/{a}/tasks", alice)
    assert status == 200 and [t["name"] for t in body["items"]] == ["seen"]
    assert console.call("GET", f"/api/v1/namespaces/{a}/tasks/seen", alice)[0] == 200
    for method, path, payload in (("GET", f"/api/v1/namespaces/{b}/tasks", None),
                                  ("GET", f"/api/v1/namespaces/{b}/agents", None),
                                  ("POST", f"/api/v1/namespaces/{a}/tasks", {"type": "echo"}),
                                  ("POST", f"/api/v1/namespaces/{a}/tasks/seen/cancel", None)):  # fmt: skip
        status, body = console.call(method, path, alice, payload)
        assert status == 403 and body["error"]["reason"] == "Forbidden", (method, path, body)
        assert "alice" in body["error"]["message"]  # the API server says who was refused
    # bob: reads A, creates in B, in the plan's shape.
    assert console.call("GET", f"/api/v1/namespaces/{a}/tasks", bob)[0] == 200
    status, made = console.call("POST", f"/api/v1/namespaces/{b}/tasks", bob,
                                {"type": "screenshot", "payload": {"url": "https://shop.example.com/"},
                                 "priority": "high", "agentType": "browser"})  # fmt: skip
    assert status == 201, made
    assert (
        made["type"] == "screenshot"
        and made["priority"] == 8
        and made["name"].startswith("screenshot-")
    )
    task = Kubectl(people["kubeconfig"], b).json("get", "agenttask", made["name"])
    assert task["spec"]["agentSelector"] == {"type": "browser", "capabilities": ["screenshot"]}
    assert (
        console.call("GET", f"/api/v1/namespaces/{b}/tasks/{made['name']}", bob)[1]["id"]
        == task["metadata"]["uid"]
    )
    status, cancelled = console.call(
        "POST", f"/api/v1/namespaces/{b}/tasks/{made['name']}/cancel", bob
    )
    assert status == 200 and cancelled["cancelRequested"] is True
    # Nobody: 401 without a token, and with one the API server does not accept.
    assert console.call("GET", f"/api/v1/namespaces/{a}/tasks", None)[0] == 401
    assert console.call("GET", f"/api/v1/namespaces/{a}/tasks", "not-a-token")[0] == 401


def test_a_refusal_is_explained_field_by_field(console: Console, people: dict[str, Any]) -> None:
    b, bob = people["b"], people["bob"]
    status, body = console.call("POST", f"/api/v1/namespaces/{b}/tasks", bob,
                                {"type": "screenshot", "payload": {"fullPage": "yes"}, "priority": 11})  # fmt: skip
    assert status == 422, body
    fields = {f["field"]: f["message"] for f in body["error"]["fields"]}
    assert "priority" in fields and "10" in fields["priority"], fields
    assert "payload.fullPage" in fields, fields
    status, body = console.call(
        "POST", f"/api/v1/namespaces/{b}/tasks", bob, {"type": "screenshot", "payload": {}}
    )
    assert status == 422 and any(f["field"] == "payload.url" for f in body["error"]["fields"]), body
    status, body = console.call(
        "POST", f"/api/v1/namespaces/{b}/tasks", bob, {"type": "screenshot", "colour": 1}
    )
    assert status == 400 and body["error"]["fields"][0]["field"] == "colour"
    status, body = console.call("POST", f"/api/v1/namespaces/{b}/tasks", bob, {"type": "custom"})
    assert status == 400 and body["error"]["fields"][0]["field"] == "agentType"


def test_lists_page_and_filter_on_the_api_server(console: Console, people: dict[str, Any]) -> None:
    b, bob = people["b"], people["bob"]
    for i in range(5):
        assert console.call("POST", f"/api/v1/namespaces/{b}/tasks", bob,
                            {"name": f"page-{i}", "type": "echo" if i % 2 else "api-test",
                             "payload": {"url": "https://api.example.com/"}, "labels": {"batch": "p"}})[0] == 201  # fmt: skip
    names: list[str] = []
    token = ""
    while True:
        q = "labelSelector=batch%3Dp&limit=2" + (f"&continue={token}" if token else "")
        status, body = console.call("GET", f"/api/v1/namespaces/{b}/tasks?{q}", bob)
        assert status == 200 and len(body["items"]) <= 2
        names += [t["name"] for t in body["items"]]
        token = body["continue"]
        if not token:
            break
    assert names == [f"page-{i}" for i in range(5)]
    status, body = console.call(
        "GET", f"/api/v1/namespaces/{b}/tasks?type=echo&labelSelector=batch%3Dp", bob
    )
    assert status == 200 and [t["name"] for t in body["items"]] == ["page-1", "page-3"]
    assert (
        console.call("GET", f"/api/v1/namespaces/{b}/tasks?phase=Running%20OR%201", bob)[0] == 400
    )


async def test_live_updates_over_sse_and_websocket_only_where_the_caller_may_read(
    console: Console, people: dict[str, Any]
) -> None:
    a, b, alice, bob = people["a"], people["b"], people["alice"], people["bob"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{console.url}/api/v1/namespaces/{b}/events",
                         headers={"Authorization": f"Bearer {alice}"}) as r:  # fmt: skip
            assert r.status == 403
        async with s.get(f"{console.url}/api/v1/namespaces/{b}/events",
                         headers={"Authorization": f"Bearer {bob}"}) as r:  # fmt: skip
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            assert console.call("POST", f"/api/v1/namespaces/{b}/tasks", bob,
                                {"name": "live", "type": "echo"})[0] == 201  # fmt: skip
            seen = await asyncio.wait_for(next_event(r, "live"), 20)
            assert seen == ("task:update", "live")
        proto = "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(
            alice.encode()
        ).decode().rstrip("=")
        async with s.ws_connect(
            f"{console.url}/api/v1/ws?namespace={a}", protocols=[proto, "wallestars.v1"]
        ) as ws:
            msg = await asyncio.wait_for(ws.receive_json(), 20)
            assert msg["event"] == "task:update" and msg["data"]["name"] == "seen"
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            async with s.ws_connect(f"{console.url}/api/v1/ws?namespace={b}", protocols=[proto]):
                pass
        assert e.value.status == 403


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.2)):
        if check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def next_update(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 20)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    body: dict[str, Any] = json.loads(msg.data)
    return body


async def test_streams_share_one_watch_and_each_ends_when_its_callers_rights_go(
    console: Console, people: dict[str, Any], cluster: localcluster.Cluster
) -> None:
    a, alice, carol = people["a"], people["alice"], people["carol"]
    k = Kubectl(cluster.kubeconfig, a)
    url = f"{console.url}/api/v1/ws?namespace={a}&snapshot=false"
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers=bearer(alice)) as ws_alice,
        s.ws_connect(url, headers=bearer(carol)) as ws_carol,
    ):
        # Two callers, one watch (streams of other tests' namespaces linger 10 s, then go).
        await until("one watch", lambda: console.metric("wallestars_console_watches") == 1)
        await asyncio.sleep(1)  # its first list done: snapshot=false follows from there
        k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "both-see"},
                     "spec": {"agentRef": "nobody", "type": "echo", "payload": {}}})  # fmt: skip
        for ws in (ws_alice, ws_carol):  # snapshot=false: the first event is the new task
            m = await next_update(ws)
            assert (m["event"], m["data"]["name"]) == ("task:update", "both-see")
        k("delete", "rolebinding", "carol-view")
        msg = await asyncio.wait_for(ws_carol.receive(), 20)  # the 2 s re-check sees it
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4403, msg
        k("label", "agenttask", "both-see", "seen-by=alice")
        m = await next_update(ws_alice)
        assert m["data"]["labels"] == {"seen-by": "alice"}  # alice's stream goes on
    assert console.metric('wallestars_console_streams_ended_total{reason="Forbidden"}') >= 1


async def test_namespaces_the_console_may_not_read_are_followed_with_the_callers_token(
    narrow_console: Console, people: dict[str, Any]
) -> None:
    """console.liveUpdates.namespaces=[A]: A is one shared watch; B, where the console
    itself may read nothing, is a watch per caller made with that caller's token."""
    a, b, alice, bob = people["a"], people["b"], people["alice"], people["bob"]
    c = narrow_console.url
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"{c}/api/v1/ws?namespace={a}", headers=bearer(alice)) as w1,
        s.ws_connect(f"{c}/api/v1/ws?namespace={a}", headers=bearer(bob)) as w2,
    ):
        for ws in (w1, w2):  # the snapshot: A's tasks, newest first
            assert (await next_update(ws))["data"]["name"] in ("seen", "both-see")
        await until(
            "A's one watch", lambda: narrow_console.metric("wallestars_console_watches") == 1
        )
        in_b = f"{c}/api/v1/ws?namespace={b}&snapshot=false"
        async with (
            s.ws_connect(in_b, headers=bearer(bob)) as w3,
            s.ws_connect(in_b, headers=bearer(bob)) as w4,
            s.ws_connect(in_b, headers=bearer(people["dave"])) as w5,
        ):
            # A's shared watch; bob's two streams in B share one feed made with his
            # token; dave's is his own (tasks only).
            await until(
                "three watches", lambda: narrow_console.metric("wallestars_console_watches") == 3
            )
            await asyncio.sleep(1)  # their first lists done: snapshot=false follows from there
            name = f"in-b-{os.getpid()}"
            status, _ = narrow_console.call(
                "POST", f"/api/v1/namespaces/{b}/tasks", bob, {"name": name, "type": "echo"}
            )
            assert status == 201
            for ws in (w3, w4, w5):  # dave, who may not read Agents, has his tasks' stream
                m = await next_update(ws)
                assert (m["event"], m["data"]["name"]) == ("task:update", name)
            assert narrow_console.metric("wallestars_console_watches") == 3
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            async with s.ws_connect(f"{c}/api/v1/ws?namespace={b}", headers=bearer(alice)):
                pass
        assert e.value.status == 403


async def next_event(r: aiohttp.ClientResponse, name: str) -> tuple[str, str]:
    event = ""
    async for line in r.content:
        text = line.decode().strip()
        if text.startswith("event: "):
            event = text.removeprefix("event: ")
        elif text.startswith("data: "):
            data = json.loads(text.removeprefix("data: "))
            if data.get("name") == name:
                return event, name
    raise AssertionError("the stream ended")


def test_fuzzed_against_its_own_openapi_document_no_server_errors(
    console: Console, people: dict[str, Any], tmp_path: Path
) -> None:
    """schemathesis generates requests from /api/openapi.json (the namespace pinned to
    one bob may write and a task name to one that exists, so requests reach the API
    server's own checks): not one 5xx."""
    status, _ = console.call("POST", f"/api/v1/namespaces/{people['b']}/tasks", people["bob"],
                             {"name": "fuzz-target", "type": "echo"})  # fmt: skip
    assert status in (201, 409)
    doc = json.loads(urllib.request.urlopen(console.url + "/api/openapi.json", timeout=10).read())  # noqa: S310
    for path in doc["paths"].values():
        for op in path.values():
            for p in op.get("parameters", []):
                if p["name"] == "namespace":
                    p["schema"] = {"type": "string", "enum": [people["b"]]}
                if p["name"] == "name":
                    p["schema"] = {"type": "string", "enum": ["fuzz-target"]}
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(doc))
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "schemathesis"), "run", str(spec), "--url", console.url,
         "--checks", "not_a_server_error", "--max-examples", "40", "--exclude-path-regex", "/events$",
         "-H", f"Authorization: Bearer {people['bob']}", "--request-timeout", "20", "--seed", "1"],
        capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    ran = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert ran and int(ran[2]) == int(ran[1]) >= 200, out.stdout[-2000:]  # each without a 5xx
