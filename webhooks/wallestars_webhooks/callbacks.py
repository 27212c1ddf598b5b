"""POST /api/agent-callback: verify, then write the result into the AgentTask's status.

Order matters: nothing is parsed before the signature holds over the raw bytes, and a
callback is acknowledged only after its status PATCH has been accepted by the API
server, so an acknowledged result is never lost (docs/callbacks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from wallestars_api import taskmetrics
from wallestars_api.lifecycle import on_callback
from wallestars_api.objects import without_bookkeeping
from wallestars_sdk.keys import attempt_keys
from wallestars_sdk.protocol import BodyError, CallbackResponse, parse_callback
from wallestars_sdk.signing import SignatureError, verify

from wallestars_webhooks import metrics
from wallestars_webhooks.http import BodyRefused, error, header_values, read_limited
from wallestars_webhooks.kube import ApiError, Kube
from wallestars_webhooks.ratelimit import TokenBuckets

log = logging.getLogger("wallestars.webhooks.callbacks")


# Seconds this request spent waiting for the Kubernetes API (a one-element list, mutable).
api_time: contextvars.ContextVar[list[float]] = contextvars.ContextVar("api_time")


@contextlib.contextmanager
def timed(operation: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        metrics.API_SECONDS.labels(operation).observe(dt)
        api_time.get([0.0])[0] += dt


def key_identity(request: web.Request) -> tuple[str, int]:
    """The (task UID, attempt) whose key must have signed: from the callback URL's query."""
    uid = request.query.getall("task", [])
    attempt = request.query.getall("attempt", [])
    if len(uid) != 1 or len(attempt) != 1 or not (1 <= len(uid[0]) <= 64):
        raise SignatureError(
            "no-key-id", "the callback URL must carry ?task=<uid>&attempt=<n> once each"
        )
    if not attempt[0].isdigit() or not 1 <= int(attempt[0]) <= 1000:
        raise SignatureError("no-key-id", "attempt must be a number from 1 to 1000")
    return uid[0], int(attempt[0])


class CallbackHandler:
    def __init__(self, kube: Kube, masters: list[bytes], settings: Any) -> None:
        self.kube = kube
        self.masters = masters
        self.s = settings
        self.buckets = TokenBuckets(settings.task_rate_per_second, settings.task_burst)
        # Answers already given, by webhook-id: a repeat is acknowledged again at once.
        self.answered: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.locks: dict[str, asyncio.Lock] = {}
        # Each task as this service last stored it (bounded): see apply().
        self.objects: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        verdict = "error"
        api_time.set([0.0])
        try:
            resp, verdict = await self.handle(request)
            # Server-Timing splits the answer time into the API server's share and ours,
            # so a client (and the benchmark) can see where the time went.
            total = time.perf_counter() - t0
            api = api_time.get()[0]
            resp.headers["Server-Timing"] = (
                f"api;dur={api * 1000:.3f}, app;dur={(total - api) * 1000:.3f}"
            )
            return resp
        finally:
            metrics.CALLBACKS.labels(verdict).inc()
            metrics.CALLBACK_SECONDS.observe(time.perf_counter() - t0)

    async def handle(self, request: web.Request) -> tuple[web.StreamResponse, str]:
        try:
            raw = await read_limited(request, self.s.max_body_bytes, self.s.body_timeout_seconds)
        except BodyRefused as e:
            return e.response, "refused-body"
        try:
            uid, attempt = key_identity(request)
            keys = attempt_keys(self.masters, uid, attempt)
            v = verify(keys, header_values(request), raw, time.time(), self.s.tolerance_seconds)
        except SignatureError as e:
            return error(401, e.reason, str(e)), "bad-signature"
        seen_key = f"{uid}/{attempt}/{v.webhook_id}"
        cached = self.answered.get(seen_key)
        if cached is not None:
            return web.json_response(cached), "duplicate"
        try:
            cb = parse_callback(raw)
        except BodyError as e:
            return error(422, "invalid-body", str(e)), "invalid-body"
        if cb.taskId != uid or cb.attempt != attempt:
            # Signed with the key of another task or attempt: that key cannot speak for this one.
            return error(
                401, "key-mismatch", "the body's taskId/attempt are not those of the signing key"
            ), "bad-signature"
        # Concurrent copies of one callback queue here, so only the first reaches the API
        # (and only the first takes from the task's rate budget).
        lock = self.locks.get(seen_key)
        if lock is None:
            wait = self.buckets.take(uid, time.monotonic())
            if wait > 0:
                return error(
                    429, "too-many-callbacks", "this task is sending callbacks too fast",
                    **{"Retry-After": str(max(1, round(wait)))},
                ), "rate-limited"  # fmt: skip
            lock = self.locks[seen_key] = asyncio.Lock()
        try:
            async with lock:
                cached = self.answered.get(seen_key)
                if cached is not None:
                    return web.json_response(cached), "duplicate"
                try:
                    return await self.apply(cb, v.webhook_id, seen_key)
                except (TimeoutError, aiohttp.ClientError) as e:
                    # Nothing was acknowledged; the agent's SDK retries after Retry-After.
                    log.warning("Kubernetes API unavailable: %r", e)
                    return error(
                        503,
                        "api-unavailable",
                        "the Kubernetes API server did not answer; try again",
                        **{"Retry-After": "2"},
                    ), "api-unavailable"
        finally:
            if not lock.locked() and self.locks.get(seen_key) is lock:
                del self.locks[seen_key]

    async def apply(
        self, cb: Any, webhook_id: str, seen_key: str
    ) -> tuple[web.StreamResponse, str]:
        ns, name = cb.task.namespace, cb.task.name
        key = (ns, name)
        for _ in range(self.s.patch_retries):
            # The object as this service last wrote it saves a GET per callback. A decision
            # taken on it is safe only when it writes (the resourceVersion precondition
            # refuses a stale one); any other answer is checked against a fresh read.
            obj = self.objects.get(key)
            fresh = obj is None
            if obj is None:
                with timed("get"):
                    obj = await self.kube.get_task(ns, name)
                if obj is None:
                    self.objects.pop(key, None)
                    return error(
                        410, "unknown-task", f"AgentTask {ns}/{name} does not exist"
                    ), "unknown-task"
            out = on_callback(obj, cb, webhook_id, datetime.now(UTC), random.random())  # noqa: S311
            if out.patch is None and not fresh and out.verdict != "duplicate":
                self.objects.pop(key, None)
                continue
            if out.http_status != 200:
                reason = out.verdict
                msg = {
                    "unknown-task": f"AgentTask {ns}/{name} is not the task {cb.taskId}",
                    "finished": f"AgentTask {ns}/{name} has finished",
                    "stale-attempt": f"attempt {cb.attempt} is not the current attempt of {ns}/{name}",
                }.get(reason, reason)
                return error(out.http_status, reason, msg), reason
            if out.patch is not None:
                try:
                    with timed("patch"):
                        stored = await self.kube.patch_status(
                            ns, name, obj["metadata"]["resourceVersion"], out.patch
                        )
                except ApiError as e:
                    self.objects.pop(key, None)
                    code = e.code
                    if code == 409:
                        metrics.PATCH_CONFLICTS.inc()
                        continue  # someone wrote first: read again and decide again
                    if code == 404:
                        return error(
                            410, "unknown-task", f"AgentTask {ns}/{name} does not exist"
                        ), "unknown-task"
                    if code in (429, 500, 503, 504):
                        # The API server's own Retry-After, passed on (2 s at least).
                        wait = max(2, math.ceil(e.retry_after or 0))
                        return error(
                            503,
                            "api-unavailable",
                            "the Kubernetes API server is busy; try again",
                            **{"Retry-After": str(wait)},
                        ), "api-unavailable"
                    if code == 422:
                        return error(
                            422,
                            "refused-by-api-server",
                            f"the API server refused the result: {e.message}",
                        ), "invalid-body"
                    raise
                self.remember_object(key, stored)
                taskmetrics.finished(obj, out.patch)
                if out.transition:
                    log.info(
                        "task %s/%s %s -> %s", ns, name, *out.transition,
                        extra={"fields": {"namespace": ns, "task": name, "attempt": cb.attempt, "webhookId": webhook_id}},
                    )  # fmt: skip
            answer = CallbackResponse(
                acknowledged=True,
                nextAction=out.next_action,
                metadata={"verdict": out.verdict, **out.metadata},
            ).model_dump(mode="json")
            self.remember(seen_key, answer)
            return web.json_response(answer), out.verdict
        return error(
            503, "conflict", "the task kept changing; try again", **{"Retry-After": "1"}
        ), "conflict"

    def remember_object(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        # managedFields are most of a small task and no decision reads them.
        self.objects[key] = without_bookkeeping(obj)
        self.objects.move_to_end(key)
        while len(self.objects) > 10_000:
            self.objects.popitem(last=False)

    def remember(self, key: str, answer: dict[str, Any]) -> None:
        self.answered[key] = answer
        while len(self.answered) > 100_000:
            self.answered.popitem(last=False)
