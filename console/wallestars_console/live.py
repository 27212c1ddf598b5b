"""Live updates: one pair of watches (AgentTasks, Agents) per namespace, shared by every
stream that follows it, and each stream authorized as its caller.

A stream per caller with its own watches costs the API server a watch and the console a
JSON decode of every change per client: 200 clients at 50 writes/s were 10,000 decodes a
second in one Python process (bench/RESULTS.md, eleventh session). Here a change is
decoded, turned into the plan's event and encoded once, then handed to every stream.

Who may follow what is still decided by Kubernetes for the caller: a stream opens only
after SelfSubjectAccessReviews made *with the caller's token* say it may watch AgentTasks
(and, for ``agent:status``, Agents) in the namespace, and is ended when a review repeated
every ``recheck`` seconds says it no longer may (or the token has expired). The shared
watch itself is made with the console's own read-only rights (chart: its ClusterRole, or
Roles in ``console.liveUpdates.namespaces``); where it has none (``watch_as=caller``, or a
namespace outside that list) the feed is made with the caller's own token instead and
shared only by streams with that same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from wallestars_api.kubeclient import ApiError, KubeClient
from wallestars_api.resources import GROUP

from wallestars_console import metrics
from wallestars_console import tasks as t

log = logging.getLogger("wallestars.console.live")
TERMINAL = frozenset({"Succeeded", "PartiallySucceeded", "Failed", "TimedOut", "Cancelled"})
KINDS = {"task": "agenttasks", "agent": "agents"}
SNAPSHOT_TASKS = 500  # newest first: a client that needs more pages through the REST list
STREAM_BACKLOG = 4096  # events waiting for one slow client before it is let go
LINGER_SECONDS = 10.0  # a feed outlives its last stream this long (reconnects, page loads)
MAX_FEEDS = 1000  # namespaces (and callers' own feeds) followed at once: 2 watches each


@dataclass(frozen=True)
class Event:
    """One of the plan's events, encoded once for every stream that carries it."""

    name: str
    kind: str  # task | agent: what a stream must be allowed to read to see it
    data: dict[str, Any]
    data_json: str

    @classmethod
    def of(cls, name: str, kind: str, data: dict[str, Any]) -> Event:
        return cls(name, kind, data, json.dumps(data, separators=(",", ":")))

    def ws_text(self) -> str:
        return '{"event":' + json.dumps(self.name) + ',"data":' + self.data_json + "}"

    def sse_bytes(self) -> bytes:
        return f"event: {self.name}\ndata: {self.data_json}\n\n".encode()


def events_for(kind: str, before: dict[str, Any] | None, now: dict[str, Any]) -> list[Event]:
    """The events one object's change makes: nothing if its view did not change (a change
    of metadata the plan does not show), ``task:<id>:complete`` once, on the way into a
    terminal phase."""
    if before == now:
        return []
    if kind == "agent":
        return [Event.of("agent:status", "agent", now)]
    out = [Event.of("task:update", "task", now)]
    if now["status"] in TERMINAL and (before is None or before["status"] not in TERMINAL):
        out.append(Event.of(f"task:{now['id']}:complete", "task", now))
    return out


def snapshot(
    tasks: Iterable[dict[str, Any]], agents: Iterable[dict[str, Any]], kinds: frozenset[str]
) -> list[Event]:
    """What a new stream is told first: every agent, then the newest tasks (the terminal
    ones with their ``complete``)."""
    out = [Event.of("agent:status", "agent", a) for a in agents] if "agent" in kinds else []
    if "task" in kinds:
        newest = sorted(tasks, key=lambda v: (v["createdAt"], v["name"]), reverse=True)
        for v in newest[:SNAPSHOT_TASKS]:
            out += events_for("task", None, v)
    return out


def view_of(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return t.agent_view(obj) if kind == "agent" else t.view(obj)


class StreamEnded(Exception):
    """Why a stream ends: its caller's rights, the console's, or a client too slow."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(eq=False)
class Stream:
    kinds: frozenset[str]
    pending: deque[Event] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: StreamEnded | None = None

    def push(self, ev: Event) -> None:
        if self.ended is not None or ev.kind not in self.kinds:
            return
        if len(self.pending) >= STREAM_BACKLOG:
            self.end(StreamEnded(503, "TooSlow", "the client fell too far behind; reconnect"))
            return
        self.pending.append(ev)
        self.wake.set()

    def end(self, why: StreamEnded) -> None:
        if self.ended is None:
            self.ended = why
            self.pending.clear()
            metrics.ENDED.labels(why.reason).inc()
        self.wake.set()

    async def next_batch(self) -> list[Event]:
        """What arrived since the last call (waits for something); StreamEnded at the end."""
        while not self.pending and self.ended is None:
            self.wake.clear()
            await self.wake.wait()
        if self.ended is not None:
            raise self.ended
        batch = list(self.pending)
        self.pending.clear()
        return batch


class Feed:
    """A namespace's AgentTasks and Agents, watched once, as views, for its streams."""

    def __init__(
        self,
        client: KubeClient,
        ns: str,
        token: str | None,
        kinds: frozenset[str] = frozenset(KINDS),
    ) -> None:
        self.client, self.ns, self.token = client, ns, token
        self.views: dict[str, dict[str, dict[str, Any]]] = {"task": {}, "agent": {}}
        self.streams: set[Stream] = set()
        # Only what its token may read: a caller's feed without Agents has no agent watch.
        self.listed: dict[str, asyncio.Event] = {k: asyncio.Event() for k in KINDS if k in kinds}
        self.failed: StreamEnded | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.closer: asyncio.TimerHandle | None = None

    def path(self, kind: str) -> str:
        return t.agents_path(self.ns) if kind == "agent" else t.tasks_path(self.ns)

    def start(self) -> None:
        self.workers = [asyncio.create_task(self.follow(k)) for k in self.listed]

    async def stop(self) -> None:
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    async def ready(self) -> None:
        await asyncio.gather(*(e.wait() for e in self.listed.values()))
        if self.failed is not None:
            raise self.failed

    def publish(self, events: list[Event]) -> None:
        for ev in events:
            for s in self.streams:
                s.push(ev)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        now = view_of(kind, obj)
        before = self.views[kind].get(name)
        self.views[kind][name] = now
        if self.listed[kind].is_set():  # the first list is what new streams' snapshots read
            self.publish(events_for(kind, before, now))

    async def relist(self, kind: str) -> str:
        """Every object, paged; changes since the last list published; the list's version."""
        seen: set[str] = set()
        cont = ""
        while True:
            params = {"limit": "500", **({"continue": cont} if cont else {})}
            page = await self.client.request(
                "GET", self.path(kind), params=params, token=self.token
            )
            for o in page.get("items") or []:
                seen.add(o["metadata"]["name"])
                self.apply(kind, o)
            meta = page.get("metadata") or {}
            if not (cont := meta.get("continue", "")):
                for gone in set(self.views[kind]) - seen:
                    del self.views[kind][gone]
                return str(meta.get("resourceVersion", ""))

    async def follow(self, kind: str) -> None:
        delay = 1.0
        while True:
            try:
                rv = await self.relist(kind)
                self.listed[kind].set()
                delay = 1.0
                params = {
                    "resourceVersion": rv,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "300",
                }
                while True:
                    expired = False
                    async for ev in self.client.watch(self.path(kind), params, token=self.token):
                        typ, obj = ev.get("type"), ev.get("object") or {}
                        if typ == "ERROR":  # 410 Gone: the version is too old, list again
                            expired = True
                            break
                        params["resourceVersion"] = obj.get("metadata", {}).get(
                            "resourceVersion", ""
                        )
                        if typ in ("ADDED", "MODIFIED"):
                            self.apply(kind, obj)
                        elif typ == "DELETED":
                            self.views[kind].pop(obj["metadata"]["name"], None)
                    if expired:
                        break
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.code in (401, 403):  # no retrying rights away: the streams end
                    self.fail(self.refusal(kind, e))
                    return
                log.warning(
                    "watching %s in %s: %s; again in %.0f s", KINDS[kind], self.ns, e, delay
                )
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.warning(
                    "watching %s in %s: %r; again in %.0f s", KINDS[kind], self.ns, e, delay
                )
            except Exception:  # an object we could not read: never a dead feed kept in use
                log.exception("watching %s in %s; again in %.0f s", KINDS[kind], self.ns, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def refusal(self, kind: str, e: ApiError) -> StreamEnded:
        if self.token is not None:  # the caller's own rights
            return StreamEnded(e.code, e.reason or "Forbidden", e.message)
        return StreamEnded(503, "ConsoleNotAllowed",
                           f"the console itself may not watch {KINDS[kind]} in namespace {self.ns!r} "
                           f"(chart: console.liveUpdates.namespaces): {e.message}")  # fmt: skip

    def fail(self, why: StreamEnded) -> None:
        self.failed = why
        for w in self.workers:
            if w is not asyncio.current_task():
                w.cancel()
        for e in self.listed.values():
            e.set()
        for s in self.streams:
            s.end(why)


async def allowed_kinds(client: KubeClient, token: str, ns: str) -> frozenset[str]:
    """What the token's owner may read in the namespace — list (the snapshot) and watch
    (the changes) — asked of the API server with that token (SelfSubjectAccessReview:
    every authenticated user may ask about itself)."""

    async def may(verb: str, resource: str) -> bool:
        review = await client.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                      {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                       "spec": {"resourceAttributes": {"namespace": ns, "verb": verb,
                                                                       "group": GROUP, "resource": resource}}},
                                      token=token)  # fmt: skip
        return bool((review.get("status") or {}).get("allowed"))

    asks = [(kind, verb) for kind in KINDS for verb in ("list", "watch")]
    answers = await asyncio.gather(*(may(verb, KINDS[kind]) for kind, verb in asks))
    return frozenset(
        kind
        for kind in KINDS
        if all(ok for (k, _), ok in zip(asks, answers, strict=True) if k == kind)
    )


def refused(ns: str) -> StreamEnded:
    return StreamEnded(403, "Forbidden",
                       f'you may not watch agenttasks in namespace "{ns}" (RBAC verb watch)')  # fmt: skip


class Hub:
    """The feeds of one console process, by namespace (and by token where the console
    follows a namespace with its caller's rights)."""

    def __init__(
        self,
        caller_client: KubeClient,
        own_client: KubeClient | None,
        shared_namespaces: frozenset[str] = frozenset(),
        recheck_seconds: float = 60.0,
        watch_client: KubeClient | None = None,
    ) -> None:
        self.caller_client, self.own_client = caller_client, own_client
        # Watches hold their connections: their own pool, apart from the calls.
        self.watch_client = watch_client or caller_client
        self.shared_namespaces = shared_namespaces  # empty: every namespace
        self.recheck_seconds = recheck_seconds
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.background: set[asyncio.Task[None]] = set()

    def feed_key(
        self, ns: str, token: str, kinds: frozenset[str]
    ) -> tuple[str, KubeClient, str | None, frozenset[str]]:
        if self.own_client is not None and (
            not self.shared_namespaces or ns in self.shared_namespaces
        ):
            return "", self.own_client, None, frozenset(KINDS)
        ident = hashlib.sha256(token.encode()).hexdigest() + ":" + ",".join(sorted(kinds))
        return ident, self.watch_client, token, kinds

    async def authorize(self, token: str, ns: str) -> frozenset[str]:
        """Before a stream opens: what the caller may follow (StreamEnded if nothing)."""
        try:
            kinds = await allowed_kinds(self.caller_client, token, ns)
        except ApiError as e:
            raise StreamEnded(e.code, e.reason or "Unauthorized", e.message) from None
        if "task" not in kinds:
            raise refused(ns)
        return kinds

    @contextlib.asynccontextmanager
    async def follow(
        self, token: str, ns: str, kinds: frozenset[str], with_snapshot: bool = True
    ) -> AsyncIterator[Stream]:
        ident, client, feed_token, feed_kinds = self.feed_key(ns, token, kinds)
        feed = self.feeds.get((ns, ident))
        if feed is None or feed.failed is not None:
            if feed is None:
                if len(self.feeds) >= MAX_FEEDS:
                    raise StreamEnded(503, "TooManyStreams",
                                      "the console follows as many namespaces and callers as it may; try later")  # fmt: skip
                metrics.FEEDS.inc()
            else:
                self.spawn(feed.stop())
            feed = self.feeds[(ns, ident)] = Feed(client, ns, feed_token, feed_kinds)
            feed.start()
        if feed.closer is not None:
            feed.closer.cancel()
            feed.closer = None
        stream = Stream(kinds)
        feed.streams.add(stream)
        rechecking = asyncio.create_task(self.recheck(stream, token, ns))
        try:
            await feed.ready()
            if with_snapshot:
                # The snapshot is now: what was queued while the feed got ready is in it.
                # Taken with no wait after it, so nothing falls between the two.
                stream.pending.clear()
                for ev in snapshot(
                    feed.views["task"].values(), feed.views["agent"].values(), kinds
                ):
                    stream.push(ev)
            yield stream
        finally:
            rechecking.cancel()
            feed.streams.discard(stream)
            if not feed.streams:
                feed.closer = asyncio.get_running_loop().call_later(
                    LINGER_SECONDS, lambda: self.spawn(self.close_if_idle(ns, ident, feed))
                )

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def recheck(self, stream: Stream, token: str, ns: str) -> None:
        """The caller's rights, asked again every period; a stream whose rights cannot be
        asked for two periods is ended too (never kept unchecked)."""
        checked = time.monotonic()
        while stream.ended is None:
            await asyncio.sleep(self.recheck_seconds)
            try:
                stream.kinds = await self.authorize(token, ns)
                checked = time.monotonic()
            except StreamEnded as why:
                stream.end(why)
            except Exception as e:
                log.warning("re-checking a stream's rights in %s: %r", ns, e)
                if time.monotonic() - checked > 2 * self.recheck_seconds:
                    stream.end(StreamEnded(503, "RightsUnchecked",
                                           "the caller's rights could not be checked again; reconnect"))  # fmt: skip

    async def close_if_idle(self, ns: str, ident: str, feed: Feed) -> None:
        if self.feeds.get((ns, ident)) is feed and not feed.streams:
            del self.feeds[(ns, ident)]
            metrics.FEEDS.dec()
            await feed.stop()

    async def close(self) -> None:
        for key in list(self.feeds):
            feed = self.feeds.pop(key)
            await feed.stop()
        for task in list(self.background):
            task.cancel()
