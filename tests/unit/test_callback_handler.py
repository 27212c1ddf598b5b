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


# Progress coalescing (issue #15): a running task's progress reports share one write.


def coalescing(tasks: Tasks, window: float = 0.3, in_flight: int = 0) -> CallbackHandler:
    """A handler that coalesces; ``in_flight`` 0: as if the API server were always busy."""
    settings = Settings(
        progress_window_seconds=window, progress_coalesce_writes_in_flight=in_flight
    )
    return CallbackHandler(tasks, [MASTER], settings)  # type: ignore[arg-type]


async def test_progress_reports_of_a_running_task_share_one_write_each_acknowledged() -> None:
    tasks = Tasks()
    # A window long enough that a loaded machine (CI beside other work) still sends the
    # five reports inside it: with 0.3 s one run wrote before the check below.
    h = coalescing(tasks, window=2.0)
    # The first report moves the task to Running: written at once, never held.
    assert (await answer(h, request(callback(progress=5), webhook_id="msg_0")))[0] == 200
    assert len(tasks.patches) == 1 and tasks.obj["status"]["phase"] == "Running"
    reports = [
        asyncio.create_task(answer(h, request(callback(progress=p), webhook_id=f"msg_{p}")))
        for p in (10, 20, 30, 40, 50)
    ]
    await asyncio.sleep(0.05)
    # Within the window nothing is written, and nothing is acknowledged before its write.
    assert len(tasks.patches) == 1 and not any(r.done() for r in reports)
    answers = await asyncio.gather(*reports)
    assert [a[0] for a in answers] == [200] * 5
    assert all(a[1]["acknowledged"] is True for a in answers)
    assert len(tasks.patches) == 2
    assert tasks.obj["status"]["progress"] == 50  # the last one sent
    history = [c["webhookId"] for c in tasks.obj["status"]["callbacks"]]
    assert history == ["msg_0", "msg_10", "msg_20", "msg_30", "msg_40", "msg_50"]


async def test_a_result_is_written_at_once_taking_the_waiting_reports_with_it() -> None:
    tasks = Tasks()
    h = coalescing(tasks, window=5.0)
    await answer(h, request(callback(progress=5), webhook_id="msg_0"))
    waiting = asyncio.create_task(answer(h, request(callback(progress=60), webhook_id="msg_60")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    status, _ = await answer(
        h, request(callback("success", results={"data": {"x": 1}}), webhook_id="msg_end")
    )
    # Well inside the 5 s window: the result did not wait, and the waiting report went
    # into the same write, before it.
    assert status == 200 and len(tasks.patches) == 2
    assert tasks.obj["status"]["phase"] == "Succeeded" and tasks.obj["status"]["progress"] == 100
    history = [c["webhookId"] for c in tasks.obj["status"]["callbacks"]]
    assert history == ["msg_0", "msg_60", "msg_end"]
    status, body = await waiting
    assert status == 200 and body["metadata"]["verdict"] == "accepted"


async def test_a_refused_shared_write_acknowledges_none_of_its_reports() -> None:
    tasks = Tasks()
    h = coalescing(tasks)
    await answer(h, request(callback(progress=5), webhook_id="msg_0"))
    tasks.fail = ApiError(429, "TooManyRequests", "slow down", retry_after=3)
    resps = await asyncio.gather(
        *(h(request(callback(progress=p), webhook_id=f"msg_{p}")) for p in (10, 20, 30))
    )
    assert [r.status for r in resps] == [503] * 3
    assert all(r.headers["Retry-After"] == "3" for r in resps)
    assert len(tasks.patches) == 1
    tasks.fail = None  # the SDK sends the same reports again: now they are stored
    again = await asyncio.gather(
        *(answer(h, request(callback(progress=p), webhook_id=f"msg_{p}")) for p in (10, 20, 30))
    )
    assert [a[0] for a in again] == [200] * 3
    assert all(a[1]["metadata"]["verdict"] == "accepted" for a in again)
    history = [c["webhookId"] for c in tasks.obj["status"]["callbacks"]]
    assert set(history) == {"msg_0", "msg_10", "msg_20", "msg_30"}


async def test_a_window_of_zero_writes_every_report_at_once() -> None:
    tasks = Tasks()
    h = coalescing(tasks, window=0)
    for p in (10, 20, 30):
        assert (await answer(h, request(callback(progress=p), webhook_id=f"msg_{p}")))[0] == 200
    assert len(tasks.patches) == 3


async def test_an_idle_service_writes_every_report_at_once_until_a_write_is_refused() -> None:
    tasks = Tasks()
    h = coalescing(tasks, window=5.0, in_flight=8)
    for p in (10, 20, 30):
        assert (await answer(h, request(callback(progress=p), webhook_id=f"msg_{p}")))[0] == 200
    assert len(tasks.patches) == 3  # no write in flight, nothing refused: no waiting
    tasks.fail = ApiError(503, "ServiceUnavailable", "overloaded")
    assert (await h(request(callback(progress=40), webhook_id="msg_40"))).status == 503
    tasks.fail = None
    await answer(h, request(callback(progress=40), webhook_id="msg_40"))  # read again, written
    # The API server refused a write a moment ago: the next report waits for the window.
    waiting = asyncio.create_task(answer(h, request(callback(progress=50), webhook_id="msg_50")))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(tasks.patches) == 4
    for t in [waiting, *h.flushing]:
        t.cancel()
