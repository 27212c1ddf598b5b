"""The webhook service's CallbackHandler without a cluster or a socket: a request built in
memory, an in-memory store of AgentTasks in place of the API (issue #13, item 10).

What the handler decides (verify, dedupe, which HTTP status, what it writes) is checked
here; the same paths end to end against the real API server are in
tests/integration/test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Mapping
from typing import Any
from unittest import mock

from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from wallestars_api.kubeclient import ApiError
from wallestars_sdk.keys import derive_attempt_key
from wallestars_sdk.signing import sign_headers
from wallestars_webhooks.callbacks import CallbackHandler
from wallestars_webhooks.config import Settings

MASTER = b"m" * 32
UID = "uid-1"


class Tasks:
    """One AgentTask, kept with a resourceVersion; status patches guarded by it."""

    def __init__(self, phase: str = "Dispatched", attempt: int = 1) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "t", "namespace": "n", "uid": UID, "resourceVersion": "10"},
            "spec": {"type": "custom", "retries": {"limit": 0}},
            "status": {"phase": phase, "attempt": attempt, "agent": "a",
                       "dispatchTime": "2026-12-02T10:00:00Z"},
        }  # fmt: skip
        self.patches: list[Mapping[str, Any]] = []
        self.fail: ApiError | None = None

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def patch_status(
        self, namespace: str, name: str, rv: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        if rv != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale")
        self.patches.append(status)
        self.obj["status"] = {**self.obj["status"], **status}
        self.obj["metadata"]["resourceVersion"] = str(int(rv) + 1)
        return copy.deepcopy(self.obj)


def request(
    raw: bytes, attempt: int = 1, webhook_id: str = "msg_1", key_attempt: int | None = None
) -> Any:
    key = derive_attempt_key(MASTER, UID, key_attempt or attempt)
    headers = {**sign_headers([key], webhook_id, int(time.time()), raw),
               "Content-Type": "application/json", "Content-Length": str(len(raw))}  # fmt: skip
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(raw)
    payload.feed_eof()
    return make_mocked_request("POST", f"/api/agent-callback?task={UID}&attempt={attempt}",
                               headers=headers, payload=payload)  # fmt: skip


def callback(status: str = "running", attempt: int = 1, **kw: Any) -> bytes:
    return json.dumps({"taskId": UID, "agentId": "a", "task": {"namespace": "n", "name": "t"},
                       "attempt": attempt, "status": status, **kw}).encode()  # fmt: skip


def handler(tasks: Tasks) -> CallbackHandler:
    return CallbackHandler(tasks, [MASTER], Settings())  # type: ignore[arg-type]


async def answer(h: CallbackHandler, req: Any) -> tuple[int, dict[str, Any]]:
    resp = await h(req)
    assert isinstance(resp, web.Response)
    return resp.status, json.loads(resp.body)  # type: ignore[arg-type]


async def test_a_result_is_written_then_acknowledged() -> None:
    tasks = Tasks()
    status, body = await answer(
        handler(tasks), request(callback("success", results={"data": {"x": 1}}))
    )
    assert status == 200 and body["acknowledged"] is True
    assert tasks.obj["status"]["phase"] == "Succeeded"
    assert tasks.obj["status"]["result"]["data"] == {"x": 1}


async def test_a_repeated_webhook_id_is_acknowledged_again_and_changes_nothing() -> None:
    tasks, h = Tasks(), None
    h = handler(tasks)
    first = await answer(h, request(callback("running", progress=30)))
    again = await answer(h, request(callback("running", progress=30)))
    assert first == again and first[0] == 200
    assert len(tasks.patches) == 1


async def test_a_bad_signature_is_401_and_changes_nothing() -> None:
    tasks = Tasks()
    status, body = await answer(handler(tasks), request(callback(), key_attempt=2))
    assert status == 401 and body["error"]["reason"] in ("bad-signature", "signature-mismatch")
    assert tasks.patches == []


async def test_a_stale_attempt_is_409_and_a_finished_task_410() -> None:
    tasks = Tasks(attempt=2)
    status, _ = await answer(handler(tasks), request(callback(attempt=1)))
    assert status == 409 and tasks.patches == []
    done = Tasks(phase="Succeeded")
    done.obj["status"]["completionTime"] = "2026-12-02T10:00:05Z"
    status, _ = await answer(handler(done), request(callback()))
    assert status == 410 and done.patches == []


async def test_a_busy_api_server_is_503_with_retry_after_and_nothing_is_acknowledged() -> None:
    tasks = Tasks()
    tasks.fail = ApiError(429, "TooManyRequests", "slow down")
    h = handler(tasks)
    resp = await h(request(callback("success")))
    assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    tasks.fail = None  # the SDK retries the same webhook-id: now it is written
    status, _ = await answer(h, request(callback("success")))
    assert status == 200 and tasks.obj["status"]["phase"] == "Succeeded"


async def test_an_invalid_body_is_422() -> None:
    tasks = Tasks()
    status, body = await answer(handler(tasks), request(callback(status="exploded")))
    assert status == 422 and body["error"]["reason"] == "invalid-body"
