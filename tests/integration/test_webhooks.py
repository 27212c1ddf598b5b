"""The webhook service as a real process, against the real API server, under its chart RBAC."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import localcluster
import pytest
from harness import (
    REPO,
    SYSTEM_NS,
    WEBHOOK_USER,
    Kubectl,
    WebhookService,
    audit_writes,
    dispatched_task,
    start_service,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wallestars_sdk.signing import sign, sign_headers, sign_seed

pytestmark = pytest.mark.cluster


def body(
    ns: str, name: str, uid: str, attempt: int = 1, status: str = "running", **kw: Any
) -> bytes:
    return json.dumps(
        {
            "taskId": uid,
            "agentId": "test-agent",
            "task": {"namespace": ns, "name": name},
            "attempt": attempt,
            "status": status,
            **kw,
        }
    ).encode()


def signed(
    key: bytes, raw: bytes, webhook_id: str | None = None, ts: int | None = None
) -> dict[str, str]:
    wid = webhook_id or f"msg_{random.getrandbits(64):x}"
    return {
        **sign_headers([key], wid, int(time.time()) if ts is None else ts, raw),
        "Content-Type": "application/json",
    }


async def post(
    session: aiohttp.ClientSession,
    url: str,
    raw: bytes,
    headers: dict[str, str] | list[tuple[str, str]],
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=raw, headers=headers) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"raw": text}


def run_progress_agent(
    svc: WebhookService, ns: str, name: str, uid: str, tmp: Any
) -> subprocess.CompletedProcess[str]:
    """tests/agents/progress_agent.py as a process, with the environment an attempt gets."""
    from wallestars_sdk.keys import encode_key

    key_file = tmp / "key"
    key_file.write_text(encode_key(svc.key(uid, 1)))
    env = {**os.environ, "WALLESTARS_CALLBACK_URL": svc.callback_url(uid, 1), "WALLESTARS_TASK_UID": uid,
           "WALLESTARS_TASK_NAMESPACE": ns, "WALLESTARS_TASK_NAME": name, "WALLESTARS_ATTEMPT": "1",
           "WALLESTARS_AGENT_ID": "test-agent", "WALLESTARS_KEY_FILE": str(key_file)}  # fmt: skip
    agent = REPO / "tests" / "agents" / "progress_agent.py"
    return subprocess.run(
        [sys.executable, str(agent)], env=env, capture_output=True, text=True, timeout=60
    )


def task_writes(cluster: localcluster.Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in audit_writes(cluster, WEBHOOK_USER, ns, name)
        if e["objectRef"].get("resource") == "agenttasks"
    ]


async def test_progress_then_success_updates_status(
    webhook_service: WebhookService, kubectl: Kubectl
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    key = webhook_service.key(uid, 1)
    url = webhook_service.callback_url(uid, 1)
    async with aiohttp.ClientSession() as s:
        for p in (20, 60):
            raw = body(ns, name, uid, progress=p)
            status, answer = await post(s, url, raw, signed(key, raw))
            assert (status, answer["acknowledged"], answer["nextAction"]) == (200, True, "none")
            assert kubectl.json("get", "agenttask", name)["status"]["progress"] == p
        raw = body(
            ns,
            name,
            uid,
            status="success",
            results={"data": {"title": "ok"}, "metrics": {"lcpMs": 812}},
        )
        status, answer = await post(s, url, raw, signed(key, raw))
        assert status == 200, answer
    st_ = kubectl.json("get", "agenttask", name)["status"]
    assert (st_["phase"], st_["progress"], st_["result"]["data"], st_["result"]["metrics"]) == (
        "Succeeded", 100, {"title": "ok"}, {"lcpMs": 812},
    )  # fmt: skip
    assert len(st_["callbacks"]) == 3 and all(c["verdict"] == "accepted" for c in st_["callbacks"])

    # One Event per transition the service wrote (Running, Succeeded), none per progress
    # report, from its own reportingController.
    def ours() -> list[dict[str, Any]]:
        evs = kubectl.json("get", "events.events.k8s.io")["items"]
        return [e for e in evs if e["regarding"]["name"] == name
                and e.get("reportingController") == "agents.wallestars.io/webhooks"]  # fmt: skip

    evs = wait_for("the service's Events", lambda: e if len(e := ours()) >= 2 else None, timeout=20)
    await asyncio.sleep(1)  # nothing more follows
    evs = ours()
    assert sorted(e["reason"] for e in evs) == ["AgentRunning", "Succeeded"], evs
    assert all(e["type"] == "Normal" and e["regarding"]["uid"] == uid for e in evs)


async def test_seed_headers_are_accepted(webhook_service: WebhookService, kubectl: Kubectl) -> None:
    name, uid = dispatched_task(kubectl)
    raw = body(kubectl.namespace or "", name, uid, progress=5)
    ts = int(time.time())
    headers = {"x-agent-id": "seed-agent", "x-agent-timestamp": str(ts), "x-agent-signature": sign_seed(webhook_service.key(uid, 1), ts, raw),
               "Content-Type": "application/json"}  # fmt: skip
    async with aiohttp.ClientSession() as s:
        status, _ = await post(s, webhook_service.callback_url(uid, 1), raw, headers)
    assert status == 200
    assert kubectl.json("get", "agenttask", name)["status"]["progress"] == 5


async def test_an_agent_written_to_the_plans_format_is_understood(
    webhook_service: WebhookService, kubectl: Kubectl
) -> None:
    """The plan's body (no task or attempt: the URL carries them), its x-agent-* headers
    with a millisecond timestamp, duration in ms, logs as lines, an error with a stack."""
    name, uid = dispatched_task(kubectl, retries={"limit": 0})
    url = f"{webhook_service.callback_url(uid, 1)}&namespace={kubectl.namespace}&name={name}"
    key = webhook_service.key(uid, 1)

    def plan_headers(raw: bytes) -> dict[str, str]:
        ms = str(int(time.time() * 1000))
        sig = hmac.new(key, ms.encode() + raw, hashlib.sha256).hexdigest()
        return {"x-agent-id": "js-agent", "x-agent-timestamp": ms, "x-agent-signature": sig,
                "Content-Type": "application/json"}  # fmt: skip

    running = json.dumps({"taskId": uid, "agentId": "js-agent", "status": "running",
                          "timestamp": int(time.time() * 1000), "progress": 40}).encode()  # fmt: skip
    failed = json.dumps({
        "taskId": uid, "agentId": "js-agent", "status": "failure",
        "timestamp": int(time.time() * 1000), "duration": 1500,
        "results": {"data": {"step": 2}, "logs": ["opening", "clicking", "gave up"]},
        "error": {"code": "ElementMissing", "message": "no #buy button", "retryable": False,
                  "stack": "Error: no #buy button\n" + "    at run (agent.js:10:5)\n" * 400}}).encode()  # fmt: skip
    async with aiohttp.ClientSession() as s:
        status, _ = await post(s, url, running, plan_headers(running))
        assert status == 200
        assert kubectl.json("get", "agenttask", name)["status"]["progress"] == 40
        status, _ = await post(s, url, failed, plan_headers(failed))
        assert status == 200
    st = kubectl.json("get", "agenttask", name)["status"]
    assert st["phase"] == "Failed" and st["error"]["code"] == "ElementMissing"
    stack = st["error"]["stack"]
    assert len(stack) == 4096 and stack.endswith("at run (agent.js:10:5)\n")  # its end, kept
    assert st["result"]["logs"] == "opening\nclicking\ngave up"
    assert st["result"]["data"] == {"step": 2}
    # Without namespace and name in the URL the plan's body cannot be placed: 422, unchanged.
    name2, uid2 = dispatched_task(kubectl)
    key = webhook_service.key(uid2, 1)
    bare = json.dumps({"taskId": uid2, "agentId": "js-agent", "status": "running"}).encode()
    async with aiohttp.ClientSession() as s:
        status, body_ = await post(
            s, webhook_service.callback_url(uid2, 1), bare, plan_headers(bare)
        )
    assert status == 422 and "task" in json.dumps(body_)
    assert kubectl.json("get", "agenttask", name2)["status"]["phase"] == "Dispatched"


FORGERIES = [
    "wrong-key", "other-task-key", "other-attempt-key", "flipped-bit", "reserialised-json",
    "missing-headers", "duplicated-headers", "garbage-headers", "expired-timestamp", "future-timestamp",
    "fractional-timestamp", "id-with-dot", "seed-wrong-key", "no-key-id-in-url",
]  # fmt: skip


def forge(
    kind: str, svc: WebhookService, ns: str, name: str, uid: str, other_uid: str
) -> tuple[str, bytes, list[tuple[str, str]]]:
    raw = body(ns, name, uid, status="success", results={"data": {"forged": True}})
    key = svc.key(uid, 1)
    url = svc.callback_url(uid, 1)
    now = int(time.time())
    h = signed(key, raw)
    if kind == "wrong-key":
        h = signed(os.urandom(32), raw)
    elif kind == "other-task-key":
        h = signed(svc.key(other_uid, 1), raw)
    elif kind == "other-attempt-key":
        h = signed(svc.key(uid, 2), raw)
    elif kind == "flipped-bit":
        flipped = bytearray(raw)
        flipped[random.randrange(len(flipped))] ^= 1 << random.randrange(8)
        raw = bytes(flipped)
    elif kind == "reserialised-json":
        raw = json.dumps(json.loads(raw), indent=1).encode()
    elif kind == "missing-headers":
        h.pop(random.choice(["webhook-id", "webhook-timestamp", "webhook-signature"]))
    elif kind == "duplicated-headers":
        pairs = [*list(h.items()), ("webhook-signature", h["webhook-signature"])]
        return url, raw, pairs
    elif kind == "garbage-headers":
        h["webhook-signature"] = random.choice(
            ["v1,", "v1,!!!!", "sha256=abc", "v1," + "A" * 5000, " v1,abc", "v1,abc,def"]
        )
    elif kind == "expired-timestamp":
        h = signed(key, raw, ts=now - 301 - random.randrange(10**6))
    elif kind == "future-timestamp":
        h = signed(key, raw, ts=now + 301 + random.randrange(10**6))
    elif kind == "fractional-timestamp":
        wid = "msg_frac"
        h = {"webhook-id": wid, "webhook-timestamp": f"{now}.5", "webhook-signature": sign(key, wid, now, raw),
             "Content-Type": "application/json"}  # fmt: skip
        # the signature is over "id.<now>." — valid for the integer, so only the header form is wrong
    elif kind == "id-with-dot":
        wid = "msg.1"
        h = {"webhook-id": wid, "webhook-timestamp": str(now), "webhook-signature": sign(key, wid, now, raw),
             "Content-Type": "application/json"}  # fmt: skip
    elif kind == "seed-wrong-key":
        h = {
            "x-agent-id": "a",
            "x-agent-timestamp": str(now),
            "x-agent-signature": sign_seed(os.urandom(32), now, raw),
        }
    elif kind == "no-key-id-in-url":
        url = f"{svc.url}/api/agent-callback?task={uid}"
    return url, raw, list(h.items())


async def test_a_thousand_forged_callbacks_change_nothing(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    _, other_uid = dispatched_task(kubectl)
    rv = kubectl.json("get", "agenttask", name)["metadata"]["resourceVersion"]
    writes_before = len(task_writes(cluster, ns, name))
    requests = [
        forge(FORGERIES[i % len(FORGERIES)], webhook_service, ns, name, uid, other_uid)
        for i in range(1000)
    ]
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(50)

    async def one(s: aiohttp.ClientSession, req: tuple[str, bytes, list[tuple[str, str]]]) -> None:
        async with sem:
            status, _ = await post(s, req[0], req[1], req[2])
            statuses[status] = statuses.get(status, 0) + 1

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, r) for r in requests))
    assert sum(statuses.values()) == 1000
    assert set(statuses) <= {401, 422}, (
        statuses
    )  # refused; a re-serialised body fails the signature
    assert kubectl.json("get", "agenttask", name)["metadata"]["resourceVersion"] == rv
    assert len(task_writes(cluster, ns, name)) == writes_before == 0


async def test_replay_window_and_duplicates(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    key, url = webhook_service.key(uid, 1), webhook_service.callback_url(uid, 1)
    now = int(time.time())
    async with aiohttp.ClientSession() as s:
        raw = body(ns, name, uid, progress=10)
        status, answer = await post(s, url, raw, signed(key, raw, ts=now - 301))
        assert (status, answer["error"]["reason"]) == (401, "stale-timestamp")
        # Inside the window with margin: `now` was truncated and a request takes time.
        status, _ = await post(s, url, raw, signed(key, raw, ts=now - 290))
        assert status == 200
        # The same webhook-id again, within the window: acknowledged, nothing changes.
        raw2 = body(ns, name, uid, progress=30)
        h = signed(key, raw2, webhook_id="msg_dup")
        first = await post(s, url, raw2, h)
        again = await post(s, url, raw2, signed(key, raw2, webhook_id="msg_dup"))
        assert first[0] == again[0] == 200 and again[1]["acknowledged"] is True
    assert len(task_writes(cluster, ns, name)) == 2  # progress 10 and progress 30, once each


async def test_fifty_concurrent_identical_callbacks_make_one_transition(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    raw = body(ns, name, uid, status="success", results={"data": {"n": 1}})
    h = signed(webhook_service.key(uid, 1), raw, webhook_id="msg_same")
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(post(s, webhook_service.callback_url(uid, 1), raw, h) for _ in range(50))
        )
    assert [r[0] for r in results] == [200] * 50
    assert len(task_writes(cluster, ns, name)) == 1
    st_ = kubectl.json("get", "agenttask", name)["status"]
    assert st_["phase"] == "Succeeded" and len(st_["callbacks"]) == 1


async def test_a_restarted_service_still_knows_a_repeated_id(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster, tmp_path: Any
) -> None:
    """Idempotency is kept in the task's status, not only in the service's memory."""
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    raw = body(ns, name, uid, progress=50)
    fresh = start_service(cluster, tmp_path / "second", webhook_service.masters)
    try:
        async with aiohttp.ClientSession() as s:
            assert (
                await post(
                    s,
                    webhook_service.callback_url(uid, 1),
                    raw,
                    signed(webhook_service.key(uid, 1), raw, "msg_r"),
                )
            )[0] == 200
            status, answer = await post(
                s, fresh.callback_url(uid, 1), raw, signed(fresh.key(uid, 1), raw, "msg_r")
            )
    finally:
        fresh.stop()
    assert (status, answer["metadata"]["verdict"]) == (200, "duplicate")
    assert len(task_writes(cluster, ns, name)) == 1


async def test_attempt_and_task_checks(webhook_service: WebhookService, kubectl: Kubectl) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl, attempt=2)
    async with aiohttp.ClientSession() as s:
        stale = body(ns, name, uid, attempt=1)
        status, answer = await post(
            s,
            webhook_service.callback_url(uid, 1),
            stale,
            signed(webhook_service.key(uid, 1), stale),
        )
        assert (status, answer["error"]["reason"]) == (409, "stale-attempt")
        gone = body(ns, "no-such-task", uid, attempt=2)
        status, answer = await post(
            s, webhook_service.callback_url(uid, 2), gone, signed(webhook_service.key(uid, 2), gone)
        )
        assert (status, answer["error"]["reason"]) == (410, "unknown-task")
        done = body(ns, name, uid, attempt=2, status="success")
        assert (
            await post(
                s,
                webhook_service.callback_url(uid, 2),
                done,
                signed(webhook_service.key(uid, 2), done),
            )
        )[0] == 200
        late = body(ns, name, uid, attempt=2, progress=99)
        status, answer = await post(
            s, webhook_service.callback_url(uid, 2), late, signed(webhook_service.key(uid, 2), late)
        )
        assert (status, answer["error"]["reason"]) == (410, "finished")


async def test_cancel_is_answered(webhook_service: WebhookService, kubectl: Kubectl) -> None:
    name, uid = dispatched_task(kubectl, cancel=True)
    raw = body(kubectl.namespace or "", name, uid, progress=10)
    async with aiohttp.ClientSession() as s:
        status, answer = await post(
            s, webhook_service.callback_url(uid, 1), raw, signed(webhook_service.key(uid, 1), raw)
        )
    assert (status, answer["nextAction"]) == (200, "cancel")


async def test_failure_answers_retry_then_escalate(
    webhook_service: WebhookService, kubectl: Kubectl
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl, retries={"limit": 1, "backoffSeconds": 30})
    async with aiohttp.ClientSession() as s:
        raw = body(ns, name, uid, status="failure", error={"code": "Flaky", "message": "try again"})
        status, answer = await post(
            s, webhook_service.callback_url(uid, 1), raw, signed(webhook_service.key(uid, 1), raw)
        )
        assert (status, answer["nextAction"]) == (200, "retry")
        st_ = kubectl.json("get", "agenttask", name)["status"]
        assert (
            st_["phase"] == "Retrying"
            and st_["error"]["code"] == "Flaky"
            and st_["nextAttemptTime"]
        )
        # The operator starts attempt 2 (simulated); it fails for good.
        kubectl.patch_status("agenttask", name, {"phase": "Dispatched", "attempt": 2})
        raw = body(
            ns, name, uid, attempt=2, status="failure", error={"code": "Flaky", "message": "again"}
        )
        status, answer = await post(
            s, webhook_service.callback_url(uid, 2), raw, signed(webhook_service.key(uid, 2), raw)
        )
    assert (status, answer["nextAction"]) == (200, "escalate")
    st_ = kubectl.json("get", "agenttask", name)["status"]
    assert (st_["phase"], st_["reason"]) == ("Failed", "RetriesExhausted")


async def test_bad_bodies_get_the_right_status(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    key, url = webhook_service.key(uid, 1), webhook_service.callback_url(uid, 1)
    cases: list[tuple[bytes, int, str]] = [
        (b'{"taskId":"x","taskId":"y"}', 422, "duplicate key"),
        (b'{"progress": NaN}', 422, "NaN"),
        (b"[" * 50 + b"]" * 50, 422, "nested deeper"),
        (body(ns, name, uid, progress="50"), 422, "progress"),
        (
            body(ns, name, uid, status="success", results={"data": {"b": "x" * 40000}}),
            422,
            "inline limit",
        ),
        (body(ns, name, "someone-else"), 401, "not those of the signing key"),
    ]
    async with aiohttp.ClientSession() as s:
        for raw, want, text in cases:
            status, answer = await post(s, url, raw, signed(key, raw))
            assert status == want and text in answer["error"]["message"], (raw[:60], status, answer)
        raw = body(ns, name, uid)
        status, answer = await post(s, url, raw, {**signed(key, raw), "Content-Encoding": "gzip"})
        assert status == 415
    assert task_writes(cluster, ns, name) == []


def test_ten_mebibyte_body_is_refused_before_it_is_read(webhook_service: WebhookService) -> None:
    host, port = webhook_service.url.removeprefix("http://").split(":")
    # Declared size: answered at once, before a byte of the body is sent.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /api/agent-callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # Chunked, with no declared size: cut off once the limit passes, long before 10 MiB.
    sent = 0
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /api/agent-callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 20
        while sent < 10 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                answer += sock.recv(4096)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sock.send(chunk)
                sent += 0x10000
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
        sock.setblocking(True)
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 8 * 1024 * 1024  # the rest was never read (socket buffers hold some)


async def test_slowloris_is_closed_while_callbacks_flow(
    webhook_service: WebhookService, kubectl: Kubectl
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    host, port = webhook_service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /api/agent-callback HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    closed_after = None
    flowed = 0
    async with aiohttp.ClientSession() as s:
        while time.monotonic() - t0 < 15:
            try:
                writer.write(b"X-Slow: a\r\n")  # a header line every half second, never finishing
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                closed_after = time.monotonic() - t0
                break
            if reader.at_eof():
                closed_after = time.monotonic() - t0
                break
            raw = body(ns, name, uid, progress=flowed % 100)
            status, _ = await post(
                s,
                webhook_service.callback_url(uid, 1),
                raw,
                signed(webhook_service.key(uid, 1), raw),
            )
            flowed += status == 200
            await asyncio.sleep(0.5)
    writer.close()
    assert closed_after is not None and closed_after <= 10, closed_after
    assert flowed >= 3


async def test_rate_limit_per_task(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl, tmp_path: Any
) -> None:
    svc = start_service(
        cluster,
        tmp_path / "rl",
        webhook_service.masters,
        # So slow a refill that no amount of machine load lets a fourth request through.
        WALLESTARS_TASK_RATE_PER_SECOND="0.01",
        WALLESTARS_TASK_BURST="3",
    )
    try:
        name, uid = dispatched_task(kubectl)
        codes = []
        async with aiohttp.ClientSession() as s:
            for i in range(6):
                raw = body(kubectl.namespace or "", name, uid, progress=i)
                status, _ = await post(
                    s, svc.callback_url(uid, 1), raw, signed(svc.key(uid, 1), raw)
                )
                codes.append(status)
    finally:
        svc.stop()
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]


async def test_master_key_rotation(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl, tmp_path: Any
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    new, _old = webhook_service.masters
    async with aiohttp.ClientSession() as s:
        for i, master in enumerate((0, 1)):  # during rotation: both masters accepted
            raw = body(ns, name, uid, progress=10 + i)
            status, _ = await post(
                s,
                webhook_service.callback_url(uid, 1),
                raw,
                signed(webhook_service.key(uid, 1, master), raw),
            )
            assert status == 200
        after = start_service(cluster, tmp_path / "rotated", [new])  # the old master removed
        try:
            raw = body(ns, name, uid, progress=30)
            status, _ = await post(
                s, after.callback_url(uid, 1), raw, signed(webhook_service.key(uid, 1, 1), raw)
            )
            assert status == 401
            status, _ = await post(
                s, after.callback_url(uid, 1), raw, signed(after.key(uid, 1), raw)
            )
            assert status == 200
        finally:
            after.stop()


def test_health_readiness_and_metrics(webhook_service: WebhookService) -> None:
    import urllib.request

    assert urllib.request.urlopen(f"{webhook_service.url}/healthz").status == 200  # noqa: S310
    assert urllib.request.urlopen(f"{webhook_service.url}/readyz").status == 200  # noqa: S310
    text = urllib.request.urlopen(f"{webhook_service.url}/metrics").read().decode()  # noqa: S310
    for name in (
        "wallestars_callbacks_total",
        "wallestars_callback_duration_seconds_bucket",
        "wallestars_webhook_api_request_duration_seconds_bucket",
    ):
        assert name in text
    assert "uid" not in text.lower().replace("fluid", "")  # no task identities as labels
    # Callback latency by the callback's status (this module's tests sent each kind).
    latency = {line.split('status="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("wallestars_callback_duration_seconds_count{")}  # fmt: skip
    assert {"running", "success", "failure", "none"} <= latency, latency


def test_not_ready_when_the_api_server_is_unreachable(
    cluster: localcluster.Cluster, tmp_path: Any, webhook_service: WebhookService
) -> None:
    import urllib.error
    import urllib.request

    from harness import free_port

    keys = tmp_path / "keys"
    keys.write_text("whsec_" + "A" * 44 + "\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c",
    }))  # fmt: skip
    port = free_port()
    env = {**os.environ, "WALLESTARS_HOST": "127.0.0.1", "WALLESTARS_PORT": str(port), "WALLESTARS_KUBECONFIG": str(kubeconfig),
           "WALLESTARS_MASTER_KEYS_FILE": str(keys), "WALLESTARS_ARTIFACT_DIR": str(tmp_path / "a")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "wallestars_webhooks"], env=env)
    try:

        def answer() -> tuple[int, str] | None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("Retry-After", "")
            except OSError:
                return None
            return 200, ""

        code, retry_after = wait_for("an answer from /readyz", answer, timeout=20)
        assert code == 503 and retry_after
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_webhook_rbac_is_least_privilege(
    cluster: localcluster.Cluster, webhook_service: WebhookService
) -> None:
    k = Kubectl(cluster.kubeconfig)
    who = f"--as={WEBHOOK_USER}"

    def can(*args: str) -> bool:
        return k.run("auth", "can-i", *args, who, check=False).stdout.strip() == "yes"

    assert can("get", "agenttasks.agents.wallestars.io", "--subresource=status", "-n", "any")
    assert can("patch", "agenttasks.agents.wallestars.io", "--subresource=status", "-n", "any")
    assert can("create", "tokenreviews.authentication.k8s.io")
    assert can("create", "subjectaccessreviews.authorization.k8s.io")
    for denied in (
        ("get", "agenttasks.agents.wallestars.io", "-n", "any"),
        ("list", "agenttasks.agents.wallestars.io", "-n", "any"),
        ("patch", "agenttasks.agents.wallestars.io", "-n", "any"),
        ("delete", "agenttasks.agents.wallestars.io", "--subresource=status", "-n", "any"),
        ("update", "agenttasks.agents.wallestars.io", "--subresource=status", "-n", "any"),
        ("get", "secrets", "-n", SYSTEM_NS),
        ("create", "events", "-n", "any"),
        ("get", "agents.agents.wallestars.io", "-n", "any"),
        ("*", "*"),
    ):
        assert not can(*denied), denied


@settings(
    max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    sign_it=st.booleans(),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "x-agent-id",
                "x-agent-timestamp",
                "x-agent-signature",
                "Content-Encoding",
                "Content-Type",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        max_size=3,
    ),
)
def test_fuzzed_bodies_and_headers_never_get_a_5xx(
    fuzz_target: dict[str, Any], data: bytes, sign_it: bool, extra: dict[str, str]
) -> None:
    import http.client

    headers = {"Content-Type": "application/json"}
    if sign_it:  # half reach the parser and the lifecycle: signed with the right key
        headers.update(
            sign_headers(
                [fuzz_target["key"]], f"msg_{random.getrandbits(48):x}", int(time.time()), data
            )
        )
    headers.update(extra)
    # The service closes a connection whose body it did not read (a refusal before the
    # body); the next request on it then finds it closed, so it is sent again on a new one.
    for _ in range(2):
        conn = fuzz_target["conn"]
        try:
            conn.request("POST", fuzz_target["path"], body=data, headers=headers)
            r = conn.getresponse()
            r.read()
            break
        except (http.client.HTTPException, OSError):
            conn.close()
            fuzz_target["conn"] = http.client.HTTPConnection(
                fuzz_target["host"], fuzz_target["port"], timeout=10
            )
    else:
        raise AssertionError("no answer twice")
    fuzz_target["seen"][r.status] = fuzz_target["seen"].get(r.status, 0) + 1
    assert r.status < 500, (data[:100], headers, r.status)


@pytest.fixture(scope="module")
def fuzz_target(webhook_service: WebhookService, cluster: localcluster.Cluster) -> Any:
    import http.client

    k = Kubectl(cluster.kubeconfig, "default")
    _name, uid = dispatched_task(k, name=f"fuzz-{random.getrandbits(32):x}")
    host, port = webhook_service.url.removeprefix("http://").split(":")
    target: dict[str, Any] = {
        "key": webhook_service.key(uid, 1), "path": f"/api/agent-callback?task={uid}&attempt=1",
        "host": host, "port": int(port), "conn": http.client.HTTPConnection(host, int(port), timeout=10), "seen": {},
    }  # fmt: skip
    yield target
    assert sum(target["seen"].values()) == 5000  # every case got an HTTP answer


async def test_end_to_end_with_a_test_agent_and_artifacts(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster, tmp_path: Any
) -> None:
    ns = kubectl.namespace or ""
    name, uid = dispatched_task(kubectl)
    out = run_progress_agent(webhook_service, ns, name, uid, tmp_path)
    assert out.returncode == 0, out.stderr
    st_ = kubectl.json("get", "agenttask", name)["status"]
    assert st_["phase"] == "Succeeded" and st_["progress"] == 100
    assert [c["status"] for c in st_["callbacks"]] == ["running", "running", "running", "success"]
    [art] = st_["result"]["artifacts"]
    content = (REPO / "tests" / "agents" / "progress_agent.py").read_bytes()
    assert art["sha256"] == hashlib.sha256(content).hexdigest() and art["size"] == len(content)

    # Downloads: allowed for a service account that may get the task, refused otherwise.
    kubectl("create", "serviceaccount", "reader")
    kubectl("create", "serviceaccount", "stranger")
    kubectl(
        "create", "role", "task-reader", "--verb=get", "--resource=agenttasks.agents.wallestars.io"
    )
    kubectl(
        "create",
        "rolebinding",
        "task-reader",
        "--role=task-reader",
        f"--serviceaccount={ns}:reader",
    )
    url = webhook_service.url + art["uri"]

    def token(sa: str) -> str:
        return kubectl("create", "token", sa).strip()

    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Authorization": f"Bearer {token('reader')}"}) as r:
            assert r.status == 200 and await r.read() == content
        async with s.get(url, headers={"Authorization": f"Bearer {token('stranger')}"}) as r:
            assert r.status == 403
        async with s.get(url) as r:
            assert r.status == 401
        async with s.get(url, headers={"Authorization": "Bearer not-a-token"}) as r:
            assert r.status == 401


def reader_client(
    svc: WebhookService, ns: str, name: str, uid: str, key: bytes | None = None
) -> Any:
    from wallestars_sdk import AgentClient, AgentConfig

    cfg = AgentConfig(callback_url=svc.callback_url(uid, 1), task_uid=uid, task_namespace=ns,
                      task_name=name, attempt=1, agent_id="test-agent", key_file=os.devnull,
                      send_attempts=1)  # fmt: skip
    return AgentClient(cfg, key or svc.key(uid, 1))


async def test_a_running_attempt_reads_the_baseline_its_payload_names_and_nothing_else(
    webhook_service: WebhookService, kubectl: Kubectl, tmp_path: Any
) -> None:
    from wallestars_sdk.client import CallbackRejected

    ns = kubectl.namespace or ""
    source, suid = dispatched_task(kubectl)
    assert run_progress_agent(webhook_service, ns, source, suid, tmp_path).returncode == 0
    content = (REPO / "tests" / "agents" / "progress_agent.py").read_bytes()

    def screenshot(artifact: dict[str, str]) -> dict[str, Any]:
        return {"agentRef": "fake", "type": "screenshot",
                "payload": {"url": "http://site.test/", "baseline": {"artifact": artifact}}}  # fmt: skip

    name, uid = dispatched_task(kubectl, **screenshot({"task": source, "name": "agent.py"}))
    async with reader_client(webhook_service, ns, name, uid) as agent:
        assert await agent.read_baseline(1 << 20) == content
        with pytest.raises(CallbackRejected) as e:
            await agent.read_baseline(100)  # the SDK's own limit
        assert e.value.status == 413
    refusals = {  # what is asked -> (status, what the answer says)
        "forged": (401, "no signature matches"),
        "no artifact of that name": (404, f"AgentTask {ns}/{source} has no artifact shot.png"),
        "no such task": (404, f"AgentTask {ns}/gone does not exist"),
        "no baseline in its payload": (404, "names no baseline artifact"),
        "finished": (409, "is not a running attempt"),
    }
    made = {
        "forged": (name, uid, os.urandom(32)),
        "no artifact of that name": (*dispatched_task(kubectl, **screenshot({"task": source, "name": "shot.png"})), None),
        "no such task": (*dispatched_task(kubectl, **screenshot({"task": "gone"})), None),
        "no baseline in its payload": (*dispatched_task(kubectl), None),
        "finished": (source, suid, None),
    }  # fmt: skip
    for case, (n, u, key) in made.items():
        async with reader_client(webhook_service, ns, n, u, key) as agent:
            with pytest.raises(CallbackRejected) as e:
                await agent.read_baseline(1 << 20)
        status, words = refusals[case]
        assert e.value.status == status and words in e.value.body, (case, e.value.body)
    # Unsigned, or signed for another path (a signature read off one request): refused.
    url = webhook_service.url + f"/api/baseline/{ns}/{name}/{uid}/1"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 401
        other = sign_headers([webhook_service.key(uid, 1)], "get_x", int(time.time()),
                             f"GET /api/baseline/{ns}/{name}/{uid}/2".encode())  # fmt: skip
        async with s.get(url, headers=other) as r:
            assert r.status == 401
    # The API server refuses a baseline with both sources, or neither.
    both = screenshot({"task": source})
    both["payload"]["baseline"]["url"] = "http://site.test/b.png"
    out = kubectl.run("apply", "-f", "-", check=False, input=json.dumps(
        {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
         "metadata": {"name": "both"}, "spec": both}))  # fmt: skip
    assert out.returncode != 0 and "a baseline is either a url or an artifact" in out.stderr


async def test_artifacts_in_s3_compatible_storage(
    webhook_service: WebhookService, kubectl: Kubectl, cluster: localcluster.Cluster, tmp_path: Any
) -> None:
    """The S3 store through boto3 against an S3-compatible server on loopback (moto's)."""
    import boto3
    from harness import free_port
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="artifacts")
        svc = start_service(
            cluster, tmp_path / "s3svc", webhook_service.masters, WALLESTARS_ARTIFACT_STORE="s3",
            WALLESTARS_S3_BUCKET="artifacts", WALLESTARS_S3_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
        )  # fmt: skip
        try:
            ns = kubectl.namespace or ""
            name, uid = dispatched_task(kubectl)
            agent = REPO / "tests" / "agents" / "progress_agent.py"
            out = run_progress_agent(svc, ns, name, uid, tmp_path)
            assert out.returncode == 0, out.stderr
            [art] = kubectl.json("get", "agenttask", name)["status"]["result"]["artifacts"]
            stored = s3.get_object(
                Bucket="artifacts", Key=f"artifacts/{ns}/{name}/{uid}/1/agent.py"
            )
            assert stored["Body"].read() == agent.read_bytes()
            kubectl("create", "serviceaccount", "reader")
            kubectl(
                "create",
                "role",
                "task-reader",
                "--verb=get",
                "--resource=agenttasks.agents.wallestars.io",
            )
            kubectl(
                "create",
                "rolebinding",
                "task-reader",
                "--role=task-reader",
                f"--serviceaccount={ns}:reader",
            )
            token = kubectl("create", "token", "reader").strip()
            async with (
                aiohttp.ClientSession() as s,
                s.get(svc.url + art["uri"], headers={"Authorization": f"Bearer {token}"}) as r,
            ):
                assert r.status == 200 and await r.read() == agent.read_bytes()
            assert list((tmp_path / "s3svc").rglob(".spool/*")) == []  # no copy left behind
        finally:
            svc.stop()
    finally:
        server.stop()


async def test_a_slow_body_gets_408_and_changes_nothing(
    cluster: localcluster.Cluster, webhook_service: WebhookService, kubectl: Kubectl, tmp_path: Any
) -> None:
    svc = start_service(
        cluster, tmp_path / "slow", webhook_service.masters, WALLESTARS_BODY_TIMEOUT_SECONDS="2"
    )
    try:
        ns = kubectl.namespace or ""
        name, uid = dispatched_task(kubectl)
        raw = body(ns, name, uid, progress=42)
        head = "".join(f"{k}: {v}\r\n" for k, v in signed(svc.key(uid, 1), raw).items())
        host, port = svc.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        path = f"/api/agent-callback?task={uid}&attempt=1"
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(raw)}\r\n\r\n".encode()
            + raw[:10]
        )
        t0 = time.monotonic()  # before the write: the service's clock starts with the body
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), timeout=15)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        # The 2 s body timeout, told apart from the 10 s default with room for a busy machine.
        assert 1.5 <= time.monotonic() - t0 <= 9
        assert "progress" not in kubectl.json("get", "agenttask", name)["status"]
    finally:
        svc.stop()


def test_no_key_or_token_is_ever_logged(webhook_service: WebhookService, kubectl: Kubectl) -> None:
    """After every test above has run through it, the service's log holds no secret."""
    from wallestars_sdk.keys import encode_key

    log = webhook_service.log.read_text()
    for master in webhook_service.masters:
        assert encode_key(master) not in log
        assert encode_key(master).removeprefix("whsec_")[:16] not in log
    assert "Bearer " not in log and "eyJ" not in log  # no Authorization header, no JWT
