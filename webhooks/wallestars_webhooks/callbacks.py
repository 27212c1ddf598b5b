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
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from wallestars_api import taskmetrics
from wallestars_api.events import EventQueue
from wallestars_api.lifecycle import CallbackOutcome, fold_callbacks
from wallestars_api.objects import without_bookkeeping
from wallestars_sdk.keys import attempt_keys
from wallestars_sdk.protocol import (
    BodyError,
    CallbackBody,
    CallbackResponse,
    CallbackStatus,
    PlanContext,
    parse_callback,
)
from wallestars_sdk.signing import SignatureError, verify

from wallestars_webhooks import metrics
from wallestars_webhooks.http import BodyRefused, error, error_body, header_values, read_limited
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


# After the API server refuses or fails a write, progress reports share writes this long.
BUSY_SECONDS = 10.0

# A verified callback: its body, webhook-id, and the key its answer is remembered by.
Item = tuple[CallbackBody, str, str]


@dataclass(frozen=True)
class Answer:
    """The answer to one callback, kept as data: callbacks that shared a write each get
    their own response built from it."""

    status: int
    verdict: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers or None)


def refusal(
    status: int, reason: str, message: str, retry_after: int | None = None, verdict: str = ""
) -> Answer:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Answer(status, verdict or reason, error_body(reason, message), headers)


@dataclass
class Batch:
    done: asyncio.Future[list[Answer]]
    items: list[Item] = field(default_factory=list)


WARNING_PHASES = frozenset({"Failed", "TimedOut", "Retrying"})
STATUS_KEY = web.RequestKey("wallestars.callback-status", str)  # for the latency metric


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
    def __init__(
        self, kube: Kube, masters: list[bytes], settings: Any, events: EventQueue | None = None
    ) -> None:
        self.kube = kube
        # One Event per transition this service writes (Running, the terminal phases,
        # Retrying), so callback-driven history shows in `kubectl describe` too.
        self.events = events
        self.masters = masters
        self.s = settings
        self.buckets = TokenBuckets(settings.task_rate_per_second, settings.task_burst)
        # Answers already given, by webhook-id: a repeat is acknowledged again at once.
        self.answered: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.locks: dict[str, asyncio.Lock] = {}
        # Each task as this service last stored it (bounded): see decide_and_patch().
        self.objects: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        # Progress reports waiting to share a write, by task; when each task was last written.
        self.window = settings.progress_window_seconds
        self.batches: dict[tuple[str, str], Batch] = {}
        self.last_write: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.flushing: set[asyncio.Task[None]] = set()
        self.writing = 0  # status writes in flight
        self.busy_until = 0.0  # the API server refused or failed a write until lately

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
            status = request.get(STATUS_KEY, "none")  # "none": refused before it was read
            metrics.CALLBACK_SECONDS.labels(status).observe(time.perf_counter() - t0)

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
        # The plan's scheme (x-agent-*) is how an agent written to the integration plan
        # signs: its body is read in the plan's format too (protocol.from_plan).
        plan = (
            PlanContext(attempt, request.query.get("namespace"), request.query.get("name"))
            if v.scheme == "seed"
            else None
        )
        try:
            cb = parse_callback(raw, plan)
        except BodyError as e:
            return error(422, "invalid-body", str(e)), "invalid-body"
        request[STATUS_KEY] = cb.status.value
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
                item = (cb, v.webhook_id, seen_key)
                if self.coalescible(cb):
                    a = await self.coalesced(item)
                else:
                    a = await self.at_once(item)
                return a.response(), a.verdict
        finally:
            if not lock.locked() and self.locks.get(seen_key) is lock:
                del self.locks[seen_key]

    def coalescible(self, cb: CallbackBody) -> bool:
        """May this callback wait to share a write? Only a progress report of a task already
        Running in this attempt (as this service last stored it), and only while the API
        server is under pressure or other reports of the task already wait: an idle service
        writes each report at once, so agents never wait for a window. Results, terminal
        states and the first report of an attempt (the move to Running) never wait."""
        if self.window <= 0 or cb.status != CallbackStatus.RUNNING or cb.results is not None:
            return False
        key = (cb.task.namespace, cb.task.name)
        obj = self.objects.get(key)
        if obj is None:
            return False
        st = obj.get("status") or {}
        if st.get("phase") != "Running" or st.get("attempt") != cb.attempt:
            return False
        return key in self.batches or self.under_pressure()

    def under_pressure(self) -> bool:
        return (
            self.writing >= self.s.progress_coalesce_writes_in_flight
            or time.monotonic() < self.busy_until
        )

    async def coalesced(self, item: Item) -> Answer:
        """Wait for the task's next write, which carries this report with any others that
        arrive before it: at most one progress write per task per window. Acknowledged only
        once that write is stored, like every other callback."""
        key = (item[0].task.namespace, item[0].task.name)
        batch = self.batches.get(key)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self.batches[key] = Batch(loop.create_future())
            flush = loop.create_task(self.flush(key, batch))
            self.flushing.add(flush)
            flush.add_done_callback(self.flushing.discard)
        index = len(batch.items)
        batch.items.append(item)
        if index:
            metrics.COALESCED.inc()
        answers = await asyncio.shield(batch.done)  # a client gone does not cancel the others
        return answers[index]

    async def at_once(self, item: Item) -> Answer:
        """Write now. Progress reports of the task still waiting go in the same write, before
        this callback (the order they arrived in), rather than after it."""
        key = (item[0].task.namespace, item[0].task.name)
        batch = self.batches.pop(key, None)
        if batch is None:
            return (await self.write(key, [item]))[0]
        await self.settle(batch, self.write(key, [*batch.items, item]))
        return (await batch.done)[-1]

    async def flush(self, key: tuple[str, str], batch: Batch) -> None:
        # A window after the task's last write began or ended (another may come meanwhile).
        while (wait := self.last_write.get(key, -math.inf) + self.window - time.monotonic()) > 0:
            await asyncio.sleep(wait)
            if self.batches.get(key) is not batch:
                return
        if self.batches.get(key) is not batch:
            return  # a callback that could not wait took these reports into its write
        del self.batches[key]  # what arrives from now on waits for the next write
        await self.settle(batch, self.write(key, batch.items))

    @staticmethod
    async def settle(batch: Batch, writing: Awaitable[list[Answer]]) -> None:
        """Hand the write's answers (or its failure) to everyone waiting on ``batch``."""
        try:
            batch.done.set_result(await writing)
        except BaseException as e:
            batch.done.set_exception(e)
            if not isinstance(e, Exception):
                raise

    async def write(self, key: tuple[str, str], items: list[Item]) -> list[Answer]:
        """Decide ``items`` (callbacks of one task) on the task and store them in one write."""
        try:
            return await self.decide_and_patch(key, items)
        except (TimeoutError, aiohttp.ClientError) as e:
            # Nothing was acknowledged; the agent's SDK retries after Retry-After.
            log.warning("Kubernetes API unavailable: %r", e)
            return [
                refusal(
                    503, "api-unavailable", "the Kubernetes API server did not answer; try again", 2
                )
            ] * len(items)

    async def decide_and_patch(self, key: tuple[str, str], items: list[Item]) -> list[Answer]:
        ns, name = key
        gone = refusal(410, "unknown-task", f"AgentTask {ns}/{name} does not exist")
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
                    return [gone] * len(items)
            patch, outs = fold_callbacks(
                obj,
                [(cb, wid) for cb, wid, _ in items],
                datetime.now(UTC),
                random.random(),  # noqa: S311
            )
            if not fresh and any(o.patch is None and o.verdict != "duplicate" for o in outs):
                self.objects.pop(key, None)
                continue
            if patch is not None:
                self.writing += 1
                self.wrote(key)  # reports arriving now wait a window from here
                try:
                    with timed("patch"):
                        stored = await self.kube.patch_status(
                            ns, name, obj["metadata"]["resourceVersion"], patch
                        )
                except (TimeoutError, aiohttp.ClientError):
                    self.busy_until = time.monotonic() + BUSY_SECONDS
                    raise
                except ApiError as e:
                    self.objects.pop(key, None)
                    if e.code == 409:
                        metrics.PATCH_CONFLICTS.inc()
                        continue  # someone wrote first: read again and decide again
                    if e.code == 404:
                        return [gone] * len(items)
                    if e.code in (429, 500, 503, 504):
                        self.busy_until = time.monotonic() + BUSY_SECONDS
                        # The API server's own Retry-After, passed on (2 s at least).
                        wait = max(2, math.ceil(e.retry_after or 0))
                        busy = "the Kubernetes API server is busy; try again"
                        return [refusal(503, "api-unavailable", busy, wait)] * len(items)
                    if e.code == 422:
                        why = f"the API server refused the result: {e.message}"
                        return [
                            refusal(422, "refused-by-api-server", why, verdict="invalid-body")
                        ] * len(items)
                    raise
                finally:
                    self.writing -= 1
                self.remember_object(key, stored)
                taskmetrics.finished(obj, patch)
                for (cb, wid, _), out in zip(items, outs, strict=True):
                    if out.transition:
                        log.info(
                            "task %s/%s %s -> %s", ns, name, *out.transition,
                            extra={"fields": {"namespace": ns, "task": name, "attempt": cb.attempt, "webhookId": wid}},
                        )  # fmt: skip
                        self.announce(stored, out)
            return [self.answer(ns, name, item, out) for item, out in zip(items, outs, strict=True)]
        conflict = refusal(503, "conflict", "the task kept changing; try again", 1)
        return [conflict] * len(items)

    def announce(self, stored: Mapping[str, Any], out: CallbackOutcome) -> None:
        if self.events is None or out.transition is None or out.patch is None:
            return
        to = out.transition[1]
        reason = str(out.patch.get("reason") or to)
        message = str(out.patch.get("message") or f"{out.transition[0]} -> {to}")
        self.events.post(stored, reason, message, to in WARNING_PHASES)

    def answer(self, ns: str, name: str, item: Item, out: CallbackOutcome) -> Answer:
        cb, _, seen_key = item
        if out.http_status != 200:
            msg = {
                "unknown-task": f"AgentTask {ns}/{name} is not the task {cb.taskId}",
                "finished": f"AgentTask {ns}/{name} has finished",
                "stale-attempt": f"attempt {cb.attempt} is not the current attempt of {ns}/{name}",
            }.get(out.verdict, out.verdict)
            return refusal(out.http_status, out.verdict, msg)
        body = CallbackResponse(
            acknowledged=True,
            nextAction=out.next_action,
            metadata={"verdict": out.verdict, **out.metadata},
        ).model_dump(mode="json")
        self.remember(seen_key, body)
        return Answer(200, out.verdict, body)

    def remember_object(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        # managedFields are most of a small task and no decision reads them.
        self.objects[key] = without_bookkeeping(obj)
        self.objects.move_to_end(key)
        self.wrote(key)
        while len(self.objects) > 10_000:
            self.objects.popitem(last=False)

    def wrote(self, key: tuple[str, str]) -> None:
        self.last_write[key] = time.monotonic()
        self.last_write.move_to_end(key)
        while len(self.last_write) > 10_000:
            self.last_write.popitem(last=False)

    def remember(self, key: str, answer: dict[str, Any]) -> None:
        self.answered[key] = answer
        while len(self.answered) > 100_000:
            self.answered.popitem(last=False)
