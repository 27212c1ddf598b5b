"""The notifier at the edge: objects in from the watches, signed POSTs out through the
egress proxy, delivery records back into status.

Every receiver (a URL's origin) has its own bounded queue and a few workers: a receiver
that is down or slow holds up only its own deliveries. A delivery that finds its queue
full stays due and is queued on a later pass; nothing is dropped. Only the replica that
holds the Lease sends. Notifications leave through smokescreen, as the browser's pages
do (wallestars_browser.egress): loopback, private, link-local and metadata addresses are
refused after DNS resolution unless the installation allows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from wallestars_api.kubeclient import ApiError
from wallestars_api.lifecycle import parse_ts
from wallestars_api.objects import without_bookkeeping
from wallestars_api.resources import AGENTTASKS, AGENTWORKFLOWS
from wallestars_browser.egress import EgressProxy, NetworkPolicy
from wallestars_sdk.keys import KeyError_, decode_key

from wallestars_operator import metrics
from wallestars_operator.kube import Kube
from wallestars_operator.notify import deliveries as d
from wallestars_operator.notify import messages

log = logging.getLogger("wallestars.operator.notify")
ObjKey = tuple[str, str, str]  # (kind, namespace, name)
SecretValue = Callable[[str, str, str], Awaitable[str | None]]
QUEUE_SIZE = 256
WORKERS_PER_RECEIVER = 16  # a receiver answering in 50 ms takes 320/s


@dataclass(frozen=True)
class NotifyConfig:
    sink: d.Sink | None = None
    max_age_seconds: float = 86400.0
    timeout_seconds: float = 10.0
    allow_plain_http: bool = False
    allow_private_cidrs: tuple[str, ...] = ()
    allow_private_addresses: tuple[str, ...] = ()
    deny_cidrs: tuple[str, ...] = ()  # the cluster's ranges
    resolvers: tuple[str, ...] = ()  # DNS servers for smokescreen; empty: the system's


@dataclass
class Receiver:
    queue: asyncio.Queue[tuple[ObjKey, d.Due]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class Notifier:
    def __init__(self, kube: Kube, secret_value: SecretValue, cfg: NotifyConfig,
                 acting: Callable[[], bool] = lambda: True,
                 spare: Callable[[], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self.kube, self.secret_value, self.cfg, self.acting = kube, secret_value, cfg, acting
        # The records' writes wait for API budget the operator's other work leaves
        # (ratelimit.TokenBucket.spare): under a flood they lag, coalesced per object,
        # while deliveries, dispatch and Secret reads go on; a restart in that lag repeats
        # a delivery (at least once; the receiver dedupes by webhook-id).
        self.spare = spare
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.recs: dict[ObjKey, dict[d.Key, dict[str, Any]]] = {}
        self.inflight: set[tuple[ObjKey, d.Key]] = set()
        self.inflight_of: dict[ObjKey, int] = {}  # deliveries queued or being sent
        # A pass looks only at what may have changed: objects observed, deliveries and
        # writes ended, retries fallen due (a heap by time; one live entry per object).
        self.dirty: set[ObjKey] = set()
        self.timers: list[tuple[datetime, ObjKey]] = []
        self.timer_of: dict[ObjKey, datetime] = {}
        self.was_acting = False
        self.receivers: dict[str, Receiver] = {}
        self.writing: set[ObjKey] = set()
        self.rewrite: set[ObjKey] = set()
        self.wake = asyncio.Event()
        self.proxy: EgressProxy | None = None
        self.proxy_lock = asyncio.Lock()
        self.workdir = tempfile.TemporaryDirectory(prefix="wallestars-notify-")
        self.session: aiohttp.ClientSession | None = None
        self.background: set[asyncio.Task[None]] = set()

    # --- in: the watches ---------------------------------------------------------------

    def observe(self, kind: str, event: Mapping[str, Any]) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            return
        k = (kind, meta.get("namespace", ""), meta["name"])
        if event.get("type") == "DELETED" or not d.receivers(obj, self.cfg.sink):
            self.forget(k)
            return
        seen = self.objects.get(k)
        if seen is not None and seen["metadata"].get("uid") != meta.get("uid"):
            self.recs.pop(k, None)  # deleted and made again under the same name
        self.objects[k] = without_bookkeeping(obj)
        observed = d.records(obj)
        mine = self.recs.setdefault(k, observed)
        for key, r in observed.items():  # our own later writes win over what lags behind
            if int(r.get("attempts", 0)) > int(mine.get(key, {}).get("attempts", 0)):
                mine[key] = r
        self.dirty.add(k)
        self.wake.set()

    def forget(self, k: ObjKey) -> None:
        self.objects.pop(k, None)
        self.recs.pop(k, None)
        self.timer_of.pop(k, None)  # its heap entry, if any, is skipped when it comes up

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self.wake.clear()
            nxt = None
            if self.acting():
                try:
                    nxt = self.tick(datetime.now(UTC))
                except Exception:
                    log.exception("notification pass failed")
                    self.dirty.update(self.objects)  # what that pass dropped: all again
            else:
                self.was_acting = False
            wait = 1.0
            if nxt is not None:
                wait = max(0.05, min(wait, (nxt - datetime.now(UTC)).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=wait)

    def tick(self, now: datetime) -> datetime | None:
        """Queue what is due; forget what is settled; when the next retry falls due.
        Only objects that may have changed are looked at (``dirty``, and retries due)."""
        if not self.was_acting:  # new to the Lease: everything held may be due
            self.was_acting = True
            self.dirty.update(self.objects)
        while self.timers and self.timers[0][0] <= now:
            at, k = heapq.heappop(self.timers)
            if self.timer_of.get(k) == at:
                del self.timer_of[k]
                self.dirty.add(k)
        todo, self.dirty = self.dirty, set()
        for k in todo:
            obj = self.objects.get(k)
            if obj is None:
                continue
            recs = self.recs.setdefault(k, {})
            if d.settled(k[0], obj, self.cfg.sink, recs) and not self.busy(k):
                self.forget(k)
                continue
            due, nxt = d.due(k[0], obj, self.cfg.sink, recs, now, self.cfg.max_age_seconds)
            if nxt is not None and (k not in self.timer_of or nxt < self.timer_of[k]):
                self.timer_of[k] = nxt
                heapq.heappush(self.timers, (nxt, k))
            for item in due:
                dk = (k, (item.receiver.index, item.transition.id))
                if dk in self.inflight:
                    continue
                r = self.receiver(item.receiver.url)
                if r.queue.full():
                    self.dirty.add(k)  # still due: queued on a later pass
                    continue
                self.inflight.add(dk)
                self.inflight_of[k] = self.inflight_of.get(k, 0) + 1
                r.queue.put_nowait((k, item))
        metrics.NOTIFY_BACKLOG.set(len(self.inflight))
        return self.timers[0][0] if self.timers else None

    def busy(self, k: ObjKey) -> bool:
        return k in self.writing or k in self.rewrite or self.inflight_of.get(k, 0) > 0

    def receiver(self, url: str) -> Receiver:
        u = urlsplit(url)
        origin = f"{u.scheme}://{u.netloc}"
        r = self.receivers.get(origin)
        if r is None:
            r = self.receivers[origin] = Receiver()
            r.workers = [asyncio.create_task(self.work(r)) for _ in range(WORKERS_PER_RECEIVER)]
        return r

    async def work(self, r: Receiver) -> None:
        while True:
            k, item = await r.queue.get()
            try:
                await self.deliver(k, item)
            except Exception:
                log.exception("notification %s/%s failed", k[1], k[2])
            finally:
                self.inflight.discard((k, (item.receiver.index, item.transition.id)))
                if (left := self.inflight_of.get(k, 1) - 1) > 0:
                    self.inflight_of[k] = left
                else:
                    self.inflight_of.pop(k, None)
                self.dirty.add(k)
                self.wake.set()

    # --- one delivery --------------------------------------------------------------------

    async def deliver(self, k: ObjKey, item: d.Due) -> None:
        obj = self.objects.get(k)
        if obj is None or not self.acting():
            return
        rc, tr = item.receiver, item.transition
        key = (rc.index, tr.id)
        wid = messages.webhook_id(obj["metadata"]["uid"], rc.index, tr.id)
        out = await self.post(k, obj, rc, tr, wid)
        now = datetime.now(UTC)
        before = self.recs.get(k, {}).get(key)
        rec = d.after(before, rc, tr, wid, out, now, random.random(), self.cfg.max_age_seconds)  # noqa: S311
        if k not in self.objects:
            return  # deleted meanwhile
        self.recs.setdefault(k, {})[key] = rec
        if rec.get("deliveredTime"):
            metrics.NOTIFICATIONS.labels("delivered").inc()
            happened = parse_ts(tr.time)
            if happened is not None:
                metrics.NOTIFY_DELAY.observe(max(0.0, (now - happened).total_seconds()))
        elif rec.get("gaveUpTime"):
            metrics.NOTIFICATIONS.labels("refused" if out.refused else "gave_up").inc()
            log.warning("%s %s/%s: notification to %s given up: %s", k[0], k[1], k[2],
                        rc.url, rec.get("lastError") or rec.get("lastStatus"))  # fmt: skip
        else:
            metrics.NOTIFICATIONS.labels("retrying").inc()
        self.write(k)

    async def post(self, k: ObjKey, obj: Mapping[str, Any], rc: d.Receiver,
                   tr: Any, wid: str) -> d.Outcome:  # fmt: skip
        if d.plain_http_refused([rc], self.cfg.allow_plain_http):
            return d.Outcome(None, "plain http is refused: notification URLs must be https", True)
        try:
            value = await self.secret_value(rc.secret_namespace, rc.secret_name, rc.secret_key)
        except Exception as e:  # missing, not opted in, or unreadable now: tried again later
            return d.Outcome(None, f"signing secret: {e}")
        if value is None:
            return d.Outcome(
                None, f"Secret {rc.secret_namespace}/{rc.secret_name} has no key {rc.secret_key}"
            )
        try:
            key = decode_key(value)
        except KeyError_ as e:
            return d.Outcome(None, f"Secret {rc.secret_namespace}/{rc.secret_name}: {e}")
        body = (
            messages.plan_body(obj, tr)
            if rc.format == "plan"
            else messages.standard_body(k[0], obj, tr)
        )
        raw = messages.encode(body)
        status = obj.get("status") or {}
        hdrs = messages.headers(
            rc.format, key, wid, int(time.time()), raw, str(status.get("agent", ""))
        )
        proxy = await self.egress()
        session = self.http()
        host = urlsplit(rc.url).hostname or ""
        try:
            async with session.post(rc.url, data=raw, headers=hdrs, proxy=proxy.url,
                                    allow_redirects=False) as r:  # fmt: skip
                # smokescreen marks its own answers (and strips the header from upstream ones).
                if proxy_error := r.headers.get("X-Smokescreen-Error"):
                    if r.status == 407:
                        why = await self.denial(host) or proxy_error
                        return d.Outcome(None, f"refused by the egress policy: {why}", True)
                    return d.Outcome(None, f"egress proxy: {proxy_error}"[:512])
                text = (await r.content.read(512)).decode(errors="replace")
                return d.Outcome(r.status, "" if r.status < 300 else text.strip()[:512])
        except aiohttp.ClientHttpProxyError as e:
            if e.status in (403, 407):
                why = await self.denial(host) or e.message
                return d.Outcome(None, f"refused by the egress policy: {why}", True)
            return d.Outcome(None, f"egress proxy: {e.status} {e.message}")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return d.Outcome(None, f"{type(e).__name__}: {e}"[:512])

    async def denial(self, host: str) -> str:
        """smokescreen's reason, waiting a moment for its log line (it may come just after
        the refusal reaches us)."""
        for _ in range(10):
            if why := self.denied(host):
                return why
            await asyncio.sleep(0.05)
        return ""

    def denied(self, host: str) -> str:
        """smokescreen's reason for refusing ``host`` most recently, if it did."""
        if self.proxy is None:
            return ""
        for den in reversed(self.proxy.denials()):
            if den.host.rsplit(":", 1)[0].strip("[]") == host.strip("[]"):
                return f"{den.host}: {den.reason}"
        return ""

    async def egress(self) -> EgressProxy:
        async with self.proxy_lock:
            if self.proxy is None or (
                self.proxy.proc is not None and self.proxy.proc.returncode is not None
            ):
                policy = NetworkPolicy(allow_private_cidrs=list(self.cfg.allow_private_cidrs),
                                       allow_private_addresses=list(self.cfg.allow_private_addresses))  # fmt: skip
                proxy = EgressProxy(policy, Path(self.workdir.name), self.cfg.deny_cidrs,
                                    self.cfg.resolvers, log_limit=2000)  # fmt: skip
                await proxy.__aenter__()
                await proxy.ready()
                self.proxy = proxy
            return self.proxy

    def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=WORKERS_PER_RECEIVER * 2),
            )
        return self.session

    # --- records back into status ---------------------------------------------------------

    def write(self, k: ObjKey) -> None:
        """Write the object's records; one write in flight per object, the last state wins."""
        if k in self.writing:
            self.rewrite.add(k)
            return
        self.writing.add(k)
        t = asyncio.create_task(self._write(k))
        self.background.add(t)
        t.add_done_callback(self.background.discard)

    async def _write(self, k: ObjKey) -> None:
        kind, ns, name = k
        plural = AGENTWORKFLOWS if kind == "AgentWorkflow" else AGENTTASKS
        try:
            while True:
                self.rewrite.discard(k)
                recs = self.recs.get(k)
                if recs is None:
                    return
                if self.spare is not None:
                    await self.spare()
                    if not self.acting():  # deposed while waiting: the new leader writes
                        return
                    recs = self.recs.get(k)  # what arrived while waiting goes in the same write
                    if recs is None:
                        return
                    self.rewrite.discard(k)
                try:
                    if not await self.kube.patch_notifications(plural, ns, name, d.as_status(recs)):
                        self.forget(k)
                        return
                except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as e:
                    log.warning("%s %s/%s: notification records not written (%s); again in 1s",
                                kind, ns, name, e)  # fmt: skip
                    await asyncio.sleep(1.0)
                    self.rewrite.add(k)
                if k not in self.rewrite:
                    return
        finally:
            self.writing.discard(k)
            self.dirty.add(k)
            self.wake.set()

    async def close(self) -> None:
        for r in self.receivers.values():
            for w in r.workers:
                w.cancel()
        if self.background:
            await asyncio.wait(list(self.background), timeout=5)
        if self.session is not None:
            await self.session.close()
        if self.proxy is not None:
            await self.proxy.__aexit__(None, None, None)
        self.workdir.cleanup()
