"""Outbound notifications end to end: the operator as a process on the real control
plane, tasks run by the test cloud function, a receiver on loopback that the
installation allows (WALLESTARS_NOTIFY_ALLOW_PRIVATE_ADDRESSES), and canaries on
loopback that it does not. Signatures are checked with the Standard Webhooks reference
library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import localcluster
import pytest
from aiohttp import web
from harness import (
    SYSTEM_NS,
    Kubectl,
    WebhookService,
    credential_secret,
    free_port,
    http_agent,
    start_operator,
    wait_for,
)
from standardwebhooks import Webhook

from tests import egress_suite
from tests.servers import Loop

pytestmark = pytest.mark.cluster

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@dataclass
class Receiver:
    """An application's endpoint on loopback: every POST kept (headers, raw body)."""

    port: int
    loop: Loop
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.got.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=204)

    def up(self) -> None:
        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", self._hook)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

        self.loop.run(start())

    def down(self) -> None:
        if self.runner is not None:
            self.loop.run(self.runner.cleanup())
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()


@pytest.fixture(scope="module")
def world(loop: Loop) -> Iterator[egress_suite.World]:
    w = loop.run(egress_suite.open_world())
    yield w
    loop.run(w.close())


@pytest.fixture
def receiver(loop: Loop) -> Iterator[Receiver]:
    r = Receiver(free_port(), loop)
    yield r
    r.down()


def operator_env(receiver: Receiver, world: egress_suite.World) -> dict[str, str]:
    return {"WALLESTARS_NOTIFY_ALLOW_PRIVATE_ADDRESSES": f"127.0.0.1:{receiver.port}",
            "WALLESTARS_NOTIFY_RESOLVERS": world.resolver}  # fmt: skip


def notify(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secretRef": {"name": "hook"}, **kw}


def create_task(kubectl: Kubectl, name: str, agent: str, behaviour: str,
                receivers: list[dict[str, Any]]) -> None:  # fmt: skip
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": name},
                   "spec": {"agentRef": agent, "type": "custom", "retries": {"limit": 0},
                            "payload": {"data": {"behaviour": behaviour}}, "notify": receivers}})  # fmt: skip


def records(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    st = kubectl.json("get", "agenttask", name).get("status") or {}
    return list(st.get("notifications") or [])


def test_every_listed_transition_arrives_once_after_dedupe_across_a_sigkill_and_a_receiver_down_30s(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl,
    function_url: str, receiver: Receiver, world: egress_suite.World,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    credential_secret(kubectl, "hook", secret=SECRET)
    http_agent(kubectl, function_url)
    env = operator_env(receiver, world)
    op = start_operator(cluster, tmp_path_factory.mktemp("op"), webhook_service.masters,
                        webhook_service.url, **env)  # fmt: skip
    try:
        # The test function reports no progress: its tasks go Dispatched -> Succeeded (or
        # Failed) and are never Running, so a listed Running is never sent.
        expected: set[tuple[str, str]] = set()
        for i in range(6):
            ok = i % 3 != 2
            plan = i == 0  # the plan's format carries the plan's statuses only
            phases = (
                ["Running", "Succeeded", "Failed"]
                if plan
                else ["Dispatched", "Running", "Succeeded", "Failed"]
            )
            create_task(kubectl, f"n{i}", "fn", "succeed" if ok else "fail",
                        [notify(receiver.url, phases=phases, format="plan" if plan else "standard")])  # fmt: skip
            expected.add((f"n{i}", "Succeeded" if ok else "Failed"))
            if not plan:
                expected.add((f"n{i}", "Dispatched#1"))
        down_since = time.monotonic()

        def finished() -> bool:
            return all((kubectl.json("get", "agenttask", f"n{i}").get("status") or {}).get("phase")
                       in ("Succeeded", "Failed") for i in range(6))  # fmt: skip

        wait_for("the tasks to finish", finished, timeout=120)
        # The receiver is down: deliveries fail and are retried, their records in status.
        wait_for("failed attempts recorded", lambda: all(
            any(int(r.get("attempts", 0)) >= 1 and not r.get("deliveredTime") for r in records(kubectl, f"n{i}"))
            for i in range(6)), timeout=60)  # fmt: skip
        op.proc.send_signal(signal.SIGKILL)
        op.proc.wait(10)
        op = start_operator(cluster, tmp_path_factory.mktemp("op2"), webhook_service.masters,
                            webhook_service.url, **env)  # fmt: skip
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
        assert receiver.got == []
        receiver.up()

        def delivered() -> bool:
            return all(len([r for r in records(kubectl, f"n{i}") if r.get("deliveredTime")])
                       == (1 if i == 0 else 2) for i in range(6))  # fmt: skip

        try:
            wait_for("every notification delivered", delivered, timeout=180)
        except AssertionError as e:
            recs = {f"n{i}": records(kubectl, f"n{i}") for i in range(6)}
            raise AssertionError(f"{e}: {json.dumps(recs)}") from None
    finally:
        op.stop()
    seen: dict[str, tuple[dict[str, str], bytes]] = {}
    for headers, raw in receiver.got:
        body = Webhook(SECRET).verify(raw, headers)  # every copy is authentic
        assert body is not None
        seen.setdefault(headers["webhook-id"], (headers, raw))
    got: set[tuple[str, str]] = set()
    for headers, raw in seen.values():
        body = json.loads(raw)
        if "taskId" in body:  # n0's plan format: the plan's body, its own headers too
            mac = hmac.new(KEY, headers["x-agent-timestamp"].encode() + raw, hashlib.sha256)
            assert headers["x-agent-signature"] == mac.hexdigest()
            name = body["task"]["name"]
            got.add((name, "Succeeded"))
            assert body["status"] == "success" and body["agentId"] == "fn"
            assert body["results"]["data"]["attempt"] == 1
        else:
            d = body["data"]
            got.add(
                (
                    d["name"],
                    f"{d['phase']}#{d['attempt']}" if d["phase"] == "Dispatched" else d["phase"],
                )
            )
            assert body["type"] == f"agenttask.{d['phase'][0].lower()}{d['phase'][1:]}"
    assert got == expected, (got ^ expected, len(receiver.got))
    assert len(seen) == len(expected)  # one webhook-id per (task, transition)
    for i in range(6):
        for r in records(kubectl, f"n{i}"):
            assert r["webhookId"] in seen and r["attempts"] >= 2 and r["lastStatus"] == "204", r


def test_notifications_to_hidden_addresses_are_refused_and_never_reach_a_canary(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl,
    receiver: Receiver, world: egress_suite.World, tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    """The browser's hostile-address list as notification URLs (each on a task that only
    waits, notified when Queued): none reaches a canary; an address the proxy resolves is
    refused and given up at once, a name it cannot resolve is retried (DNS may recover)
    and never sent anywhere; the allowed receiver still gets its own."""
    credential_secret(kubectl, "hook", secret=SECRET)
    # Not the redirect chains (notifications follow no redirects), nor DNS rebinding: its
    # first answer is a public address, which the proxy would really connect to.
    cases = [(n, u) for n, u in egress_suite.hostile(world)
             if not n.startswith(("redirect-", "dns-rebinding"))]  # fmt: skip
    assert len(cases) >= 38
    receiver.up()
    op = start_operator(cluster, tmp_path_factory.mktemp("op"), webhook_service.masters,
                        webhook_service.url, **operator_env(receiver, world))  # fmt: skip
    try:
        tasks: dict[str, list[tuple[str, str]]] = {}
        for start in range(0, len(cases), 3):
            batch = cases[start : start + 3]
            name = f"h{start // 3}"
            tasks[name] = batch
            create_task(kubectl, name, "nobody", "succeed",
                        [notify(receiver.url, phases=["Queued"]),
                         *(notify(url, phases=["Queued"]) for _, url in batch)])  # fmt: skip

        def tried() -> bool:
            return all(len([r for r in records(kubectl, n) if r.get("attempts")]) == len(b) + 1
                       for n, b in tasks.items())  # fmt: skip

        wait_for("every notification tried", tried, timeout=120)
    finally:
        op.stop()
    refused = []
    for name, batch in tasks.items():
        recs = {r["receiver"]: r for r in records(kubectl, name)}
        assert recs[0]["lastStatus"] == "204" and recs[0]["attempts"] == 1
        for i, (case, _) in enumerate(batch, start=1):
            r = recs[i]
            assert not r.get("deliveredTime"), (case, r)
            if r["lastStatus"] == "refused":
                assert r.get("gaveUpTime") and r["attempts"] == 1, (case, r)
                assert "refused by the egress policy" in r["lastError"], (case, r)
                refused.append(case)
            else:  # smokescreen could not resolve it: its own error, never the receiver's
                assert r["lastStatus"] == "error" and "egress proxy: " in r["lastError"], (case, r)
                assert r.get("nextAttemptTime") and not r.get("gaveUpTime"), (case, r)
    assert {"ipv4", "same-host-other-port", "localhost", "ipv6-loopback", "ipv4-mapped",
            "dns-loopback", "https-loopback", "metadata", "metadata-gcp",
            "private-10", "dns-private", "cgnat", "ula-v6"} <= set(refused), json.dumps([
        r["lastError"] for n in tasks for r in records(kubectl, n) if "egress proxy" in r.get("lastError", "")])  # fmt: skip
    assert {c.host: c.hits for c in world.canaries if c.hits} == {}
    assert len({h["webhook-id"] for h, _ in receiver.got}) == len(tasks)


def test_a_secret_that_did_not_opt_in_is_not_used_and_the_delivery_waits(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl,
    receiver: Receiver, world: egress_suite.World, tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    credential_secret(kubectl, "hook", opt_in=False, secret=SECRET)
    receiver.up()
    op = start_operator(cluster, tmp_path_factory.mktemp("op"), webhook_service.masters,
                        webhook_service.url, **operator_env(receiver, world))  # fmt: skip
    try:
        create_task(
            kubectl, "unsigned", "nobody", "succeed", [notify(receiver.url, phases=["Queued"])]
        )
        rec = wait_for("a failed attempt recorded", lambda: next(iter(records(kubectl, "unsigned")), None),
                       timeout=60)  # fmt: skip
        assert "agents.wallestars.io/credential" in rec["lastError"] and not rec.get("gaveUpTime")
        assert receiver.got == []
        # Opting in later lets the retry through.
        kubectl("label", "secret", "hook", "agents.wallestars.io/credential=true")
        wait_for("the retry delivered", lambda: any(r.get("deliveredTime") for r in records(kubectl, "unsigned")),
                 timeout=120)  # fmt: skip
    finally:
        op.stop()
    assert len(receiver.got) == 1


def test_the_default_sink_gets_every_task_of_its_namespaces(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl,
    receiver: Receiver, world: egress_suite.World, tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    """notifications.defaultSink: tasks without spec.notify in the listed namespace are
    notified to the sink (receiver -1), signed with the Secret in the operator's own
    namespace; a task in another namespace is not."""
    system = Kubectl(cluster.kubeconfig, SYSTEM_NS)
    system.run("delete", "secret", "feed", "--ignore-not-found")
    credential_secret(system, "feed", secret=SECRET)
    other = f"{kubectl.namespace}-other"
    Kubectl(cluster.kubeconfig)("create", "namespace", other)
    receiver.up()
    env = {**operator_env(receiver, world), "WALLESTARS_NOTIFY_SINK_URL": receiver.url,
           "WALLESTARS_NOTIFY_SINK_SECRET": "feed", "WALLESTARS_NOTIFY_SINK_PHASES": "Queued",
           "WALLESTARS_NOTIFY_SINK_NAMESPACES": kubectl.namespace or ""}  # fmt: skip
    op = start_operator(cluster, tmp_path_factory.mktemp("op"), webhook_service.masters,
                        webhook_service.url, **env)  # fmt: skip
    try:
        create_task(kubectl, "fed", "nobody", "succeed", [])
        create_task(Kubectl(cluster.kubeconfig, other), "unfed", "nobody", "succeed", [])
        rec = wait_for("the sink's delivery", lambda: next(
            (r for r in records(kubectl, "fed") if r.get("deliveredTime")), None), timeout=60)  # fmt: skip
        time.sleep(3)  # time enough for a wrong delivery of the other namespace's task
    finally:
        op.stop()
        Kubectl(cluster.kubeconfig)("delete", "namespace", other, "--wait=false")
    assert rec["receiver"] == -1 and rec["transition"] == "Queued"
    [(headers, raw)] = receiver.got
    body = Webhook(SECRET).verify(raw, headers)
    assert body["type"] == "agenttask.queued" and body["data"]["name"] == "fed"


def test_a_workflow_steps_template_notifies_for_its_task(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl,
    receiver: Receiver, world: egress_suite.World, tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    """notify in a step's template: the step's task is created with it and notifies as a
    task does (here its Queued, signed, with the task's own name)."""

    def workflow(name: str, receivers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow", "metadata": {"name": name},
                "spec": {"steps": [{"name": "check", "template": {
                    "agentRef": "nobody", "type": "custom", "payload": {}, "notify": receivers}}]}}  # fmt: skip

    # Checked by the API server as a task's notify is, at its place in the step.
    out = kubectl.run(
        "apply", "-f", "-", input=json.dumps(workflow("bad", [notify("hook")])), check=False
    )
    assert out.returncode != 0 and "spec.steps[0].template.notify[0]" in out.stderr, out.stderr
    assert "url must be an absolute https URL" in out.stderr
    kubectl.run("delete", "secret", "hook", "--ignore-not-found")
    credential_secret(kubectl, "hook", secret=SECRET)
    receiver.up()
    op = start_operator(cluster, tmp_path_factory.mktemp("op"), webhook_service.masters,
                        webhook_service.url, **operator_env(receiver, world))  # fmt: skip
    try:
        kubectl.apply(workflow("told", [notify(receiver.url, phases=["Queued"])]))
        wait_for("the step's notification", lambda: receiver.got, timeout=60)
        time.sleep(2)  # a second, wrong delivery would arrive by now
    finally:
        op.stop()
    [(headers, raw)] = receiver.got
    body = Webhook(SECRET).verify(raw, headers)
    (step_task,) = kubectl.json("get", "agenttasks", "-l", "agents.wallestars.io/workflow=told")[
        "items"
    ]
    assert (
        body["type"] == "agenttask.queued" and body["data"]["name"] == step_task["metadata"]["name"]
    )
    assert step_task["spec"]["notify"][0]["url"] == receiver.url
