"""The reconcile loop: look at everything, decide with pure functions, act, repeat.

Level-triggered: every pass starts from the caches (the API as watched), so a restart,
a lost event or a duplicate one changes nothing. Each status write carries the
resourceVersion it was decided on; a stale decision is refused by the API server and
simply taken again on the next pass. A pass only decides (upkeep.decide for each task
that needs care, scheduling.plan for the queue); every write it decides on runs in the
background (``spawn``), at most one per task, so a burst of writes of one kind (a
thousand TTL deletions) never holds up another (dispatch). A write that fails is
decided again after a jittered backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from wallestars_api import taskmetrics
from wallestars_api.events import EventQueue
from wallestars_api.kubeclient import ApiError
from wallestars_api.lifecycle import (
    Phase,
    Transition,
    attempt_failed,
    dispatch,
    end,
    parse_ts,
    phase_of,
    wait,
)
from wallestars_api.tls import issue_attempt_certificate
from wallestars_sdk import secrets as task_secrets
from wallestars_sdk.keys import derive_attempt_key, encode_key

from wallestars_operator import metrics
from wallestars_operator.agent_upkeep import AgentUpkeep
from wallestars_operator.cloud import Cloud, not_opted_in_message, opted_in
from wallestars_operator.kube import Kube
from wallestars_operator.manifests import AttemptConfig, attempt_name, browser_job, key_secret
from wallestars_operator.ratelimit import TokenBucket
from wallestars_operator.schedules.controller import Schedules
from wallestars_operator.scheduling import AgentView, TaskView, Wait, plan
from wallestars_operator.state import State
from wallestars_operator.upkeep import (
    Action,
    DeleteTask,
    End,
    Facts,
    FailAttempt,
    Invoke,
    MakeAttemptObjects,
    ReadPod,
    Refusal,
    decide,
    job_of,
    needs_care,
)
from wallestars_operator.workflows.controller import Workflows

log = logging.getLogger("wallestars.operator")
# A waiting task's reason is written when it changes; its queue position alone is
# refreshed at most this often, so a long queue draining does not rewrite every task
# on every dispatch (that cost O(queue) writes per dispatch: bench/RESULTS.md).
POSITION_REFRESH_SECONDS = 10.0
# And all position-only refreshes together at most this many writes per second (oldest
# first): a queue of thousands would otherwise cost hundreds of writes a second.
POSITION_WRITES_PER_SECOND = 5.0
# TTL deletions are housekeeping: at most this share of the operator's API budget and
# this many in flight, so a thousand tasks expiring at once never hold up a dispatch.
HOUSEKEEPING_SHARE = 0.2
HOUSEKEEPING_IN_FLIGHT = 4
# After a failed write (an API error), the task is left alone this long, doubling, capped.
WRITE_BACKOFF = (0.2, 5.0)
# The API server refused an attempt's objects as invalid: the same objects would be
# refused again, so the attempt fails without a retry.
INVALID = (400, 413, 422)

__all__ = ["Reconciler", "needs_care"]


def write_backoff(failures: int, rand: float) -> float:
    """Seconds to leave a task alone after its ``failures``-th failed write in a row (pure):
    doubling from WRITE_BACKOFF[0] to WRITE_BACKOFF[1], jittered to 50-100%."""
    base = min(WRITE_BACKOFF[1], WRITE_BACKOFF[0] * 2.0 ** (failures - 1))
    return float(base * (0.5 + rand / 2))


class Reconciler(AgentUpkeep):
    def __init__(
        self,
        state: State,
        kube: Kube,
        events: EventQueue,
        masters: list[bytes],
        cfg: AttemptConfig,
        callback_grace: float,
        api_qps: float = 50.0,
        acting: Callable[[], bool] = lambda: True,
    ) -> None:
        self.state = state
        self.kube = kube
        self.events = events
        self.masters = masters
        self.cfg = cfg
        self.callback_grace = callback_grace
        # Whether this replica still holds the Lease: a write decided while it did is
        # dropped if it no longer does by the time the write's turn comes.
        self.acting = acting
        self.cloud = Cloud(kube, self.key_text, cfg, self.client_cert)
        self.workflows = Workflows(state, kube, events, self.spawn, self.free)
        self.schedules = Schedules(state, kube, events, self.spawn, self.free)
        self.sem = asyncio.Semaphore(32)
        self.agent_written: dict[tuple[str, str], tuple[Any, float]] = {}
        # Browser Agents' probe verdicts not yet written to their status.
        self.probe_verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        # When each waiting task's queue position was last written (throttling only).
        self.position_written: dict[tuple[str, str], float] = {}
        self.position_budget = TokenBucket(
            POSITION_WRITES_PER_SECOND, int(POSITION_WRITES_PER_SECOND * 4)
        )
        # Writes in flight per task, and the agent each in-flight dispatch has taken a slot of.
        self.busy: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.reserved: dict[tuple[str, str], str] = {}
        # Keys whose last write failed: (failures in a row, not before this monotonic time).
        self.backoff: dict[tuple[str, str], tuple[int, float]] = {}
        self.retry_after_waited = 0.0  # seconds added to backoffs by the server's Retry-After
        self.housekeeping = TokenBucket(api_qps * HOUSEKEEPING_SHARE, HOUSEKEEPING_IN_FLIGHT)
        self.housekeeping_busy: set[tuple[str, str]] = set()

    async def close(self) -> None:
        if self.busy:  # let writes in flight finish; anything cut off is redone on restart
            await asyncio.wait(list(self.busy.values()), timeout=5)
        await self.cloud.close()

    # --- writing ----------------------------------------------------------------------

    async def apply(self, obj: Mapping[str, Any], tr: Transition) -> dict[str, Any] | None:
        """Write a transition (guarded by resourceVersion) and announce it with an Event."""
        before = phase_of(obj)
        stored = await self.kube.patch_task_status(obj, tr.patch)
        if stored is None:
            return None  # someone else wrote first; the next pass decides again
        self.state.put("tasks", stored)
        if tr.phase != before:
            taskmetrics.finished(obj, tr.patch)
            self.events.post(stored, tr.reason, tr.message, tr.warning)
        return stored

    def free(self, key: tuple[str, str], mono: float) -> bool:
        """Whether a write for ``key`` may start now: none in flight, not backing off."""
        if key in self.busy:
            return False
        b = self.backoff.get(key)
        return b is None or b[1] <= mono

    def spawn(
        self, key: tuple[str, str], fn: Callable[[], Awaitable[None]], housekeeping: bool = False
    ) -> None:
        """Run one task's write in the background; at most one in flight per task.
        Housekeeping waits for its own budget before it takes a place among the writes."""

        async def run() -> None:
            if housekeeping:
                await self.housekeeping.take()
            async with self.sem:
                if not self.acting():
                    return  # another replica decides now
                try:
                    await fn()
                except Exception as e:
                    n = self.backoff.get(key, (0, 0.0))[0] + 1
                    delay = write_backoff(n, random.random())  # noqa: S311 (jitter)
                    if isinstance(e, ApiError) and e.retry_after is not None:
                        # Never sooner than the server asked; only this task's write waits.
                        self.retry_after_waited += max(0.0, e.retry_after - delay)
                        delay = max(delay, e.retry_after)
                    self.backoff[key] = (n, time.monotonic() + delay)
                    if isinstance(e, ApiError | TimeoutError | OSError | aiohttp.ClientError):
                        log.warning("%s/%s: %s; decided again in %.1fs", *key, e, delay)
                    else:
                        log.exception("reconcile step failed; decided again in %.1fs", delay)
                else:
                    self.backoff.pop(key, None)

        t = asyncio.create_task(run())
        self.busy[key] = t

        if housekeeping:
            self.housekeeping_busy.add(key)

        def done(_: asyncio.Task[None]) -> None:
            self.busy.pop(key, None)
            self.housekeeping_busy.discard(key)
            self.reserved.pop(key, None)
            self.state.wake.set()  # the written object is in the cache: look again

        t.add_done_callback(done)

    async def _apply_none(self, obj: Mapping[str, Any], tr: Transition) -> None:
        await self.apply(obj, tr)

    # --- one pass ---------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass: decisions only, in CPU time; every write goes to ``spawn``, so a task
        created during a slow write, or during a thousand of them, is not held up."""
        now = datetime.now(UTC)
        mono = time.monotonic()
        store = self.state.tasks
        # Only live tasks and finished ones whose TTL is due (State's index): a pass costs
        # the same with 10,000 finished tasks kept as with none.
        expired = [k for k, when in self.state.expiry.items() if when <= now]
        for k in expired + list(self.state.live):
            o = store.get(k)
            if o is None or not self.free(k, mono) or not needs_care(o, now):
                continue
            try:
                action = decide(o, self.facts(o), now)
            except Exception:  # one malformed task must not stop every other one
                log.exception("%s/%s: no decision; decided again later", *k)
                self.backoff[k] = (1, mono + WRITE_BACKOFF[1])
                continue
            if isinstance(action, DeleteTask):
                if len(self.housekeeping_busy) < HOUSEKEEPING_IN_FLIGHT:
                    self.spawn(k, functools.partial(self.act, o, action, now), True)
            elif action is not None:
                self.spawn(k, functools.partial(self.act, o, action, now))
        tasks = [
            o for k in self.state.live if not ((o := store[k]).get("spec") or {}).get("cancel")
        ]
        agents = dict(self.state.agents)
        self.probe_health(agents, mono)
        self.probe_browsers(agents, now, mono)
        views = [AgentView.of(a, ready=self.problem(k, a) is None) for k, a in agents.items()]
        task_views = []
        for o in tasks:
            v = TaskView.of(o)
            if v.key in self.reserved:  # its Dispatched write is in flight: its slot is taken
                v = dataclasses.replace(v, phase=Phase.DISPATCHED, agent=self.reserved[v.key])
            task_views.append(v)
        p = plan(task_views, views, now)
        by_key = {self.state.key("tasks", o): o for o in tasks}
        for t, a in p.dispatch:
            if self.free(t.key, mono):
                self.reserved[t.key] = a.name
                self.spawn(
                    t.key,
                    functools.partial(self.start_attempt, by_key[t.key], agents[(a.namespace, a.name)], now),
                )  # fmt: skip
        stale: list[tuple[float, tuple[str, str]]] = []
        for k, w in p.waiting.items():
            if not self.free(k, mono):
                continue
            if (by_key[k].get("status") or {}).get("reason") == w.reason:
                written = self.position_written.get(k, 0.0)
                if mono - written >= POSITION_REFRESH_SECONDS:
                    stale.append((written, k))
                continue  # only the position moved: refreshed below, within the budget
            self._write_wait(by_key[k], w, now, mono)
        for _, k in sorted(stale):
            if self.position_budget.try_take() > 0:
                break
            self._write_wait(by_key[k], p.waiting[k], now, mono)
        metrics.queue_depth(p.queued, agents)
        self.agent_status(agents, p.load, p.queued, now)
        self.workflows.tick(now, mono)
        self.schedules.tick(now, mono)
        self._forget(tasks, p.waiting)

    def _forget(self, tasks: list[dict[str, Any]], waiting: Mapping[tuple[str, str], Wait]) -> None:
        """Drop what this process remembers of tasks that are no longer live or waiting."""
        if len(self.position_written) > 2 * len(waiting) + 1000:
            self.position_written = {k: v for k, v in self.position_written.items() if k in waiting}
        if len(self.cloud.invoked) + len(self.cloud.refused) > 2 * len(tasks) + 1000:
            self.cloud.forget({
                (o["metadata"]["uid"], int((o.get("status") or {}).get("attempt") or 0))
                for o in tasks
            })  # fmt: skip
        if len(self.backoff) > 1000:
            mono = time.monotonic()
            self.backoff = {k: b for k, b in self.backoff.items() if b[1] > mono - 60}

    def _write_wait(self, obj: Mapping[str, Any], w: Wait, now: datetime, mono: float) -> None:
        tr = wait(obj, w.reason, w.message, w.position, now)
        if tr is not None:
            k = self.state.key("tasks", obj)
            self.position_written[k] = mono
            self.spawn(k, functools.partial(self._apply_none, obj, tr))

    # --- per task ---------------------------------------------------------------------

    def facts(self, obj: Mapping[str, Any]) -> Facts:
        meta, status = obj["metadata"], obj.get("status") or {}
        ns = meta["namespace"]
        agent = self.state.agents.get((ns, status.get("agent") or ""))
        browser = agent is not None and (agent.get("spec") or {}).get("type") == "browser"
        job = job_of(obj) if browser else None
        attempt = int(status.get("attempt") or 0)
        return Facts(
            browser=browser,
            agent_known=agent is not None,
            job=self.state.jobs.get((ns, job)) if job else None,
            pod=self.state.pods.get((ns, job)) if job else None,
            invoked=(meta["uid"], attempt) in self.cloud.invoked,
            refusal=self.cloud.refused.get(meta["uid"]),
            callback_grace=self.callback_grace,
        )

    async def act(self, obj: Mapping[str, Any], action: Action, now: datetime) -> None:
        """Carry out what upkeep.decide chose for one task."""
        meta, status = obj["metadata"], obj.get("status") or {}
        ns = meta["namespace"]
        match action:
            case DeleteTask():
                await self.kube.delete_task(obj)
                self.state.remove("tasks", obj)  # not deleted again before the watch says so
            case End(phase=phase, reason=reason, message=message, delete_job=job):
                if job:
                    await self.kube.delete_job(ns, job)
                await self.apply(obj, end(obj, phase, reason, message, now))
            case FailAttempt(code=code, message=message, retryable=retryable,
                             exit_code=exit_code, delete_job=job):  # fmt: skip
                if job:
                    await self.kube.delete_job(ns, job)
                await self.apply(
                    obj, attempt_failed(obj, code, message, retryable, now, jitter(), exit_code)
                )
            case MakeAttemptObjects():
                agent = self.state.agents.get((ns, status.get("agent") or ""))
                if agent is not None:
                    await self.ensure_attempt_objects(obj, agent)
            case ReadPod(job=job):
                # Pods are not watched (each costs ~5 watch events); read the attempt's pod
                # once, when its Job ended with no final callback, for the exit code and why.
                pod = await self.kube.job_pod(ns, job)
                if pod is None:  # gone (garbage-collected, evicted and removed): say so
                    pod = {"metadata": {"name": job, "namespace": ns, "uid": "",
                                        "labels": {"job-name": job}}, "status": {}}  # fmt: skip
                self.state.put("pods", pod)
            case Invoke():
                agent = self.state.agents.get((ns, status.get("agent") or ""))
                if agent is not None:
                    log.info("invoking %s/%s attempt %s again after a restart",
                             ns, meta["name"], status.get("attempt"))  # fmt: skip
                    await self.cloud.invoke(obj, agent, now)

    # --- dispatch ---------------------------------------------------------------------

    async def start_attempt(
        self, obj: Mapping[str, Any], agent: Mapping[str, Any], now: datetime
    ) -> None:
        meta = obj["metadata"]
        attempt = int((obj.get("status") or {}).get("attempt") or 0) + 1
        browser = (agent.get("spec") or {}).get("type") == "browser"
        job = attempt_name(meta["name"], meta["uid"], attempt) if browser else None
        t0 = time.perf_counter()
        # Dispatched is written before the agent can call back, so its first callback is
        # accepted; a crash after this write is repaired by upkeep (JOB_REPAIR_SECONDS).
        stored = await self.apply(obj, dispatch(obj, agent["metadata"]["name"], now, job))
        if stored is None:
            return
        created = parse_ts(meta.get("creationTimestamp"))
        if attempt == 1 and created is not None:
            metrics.QUEUE_WAIT.observe(max((now - created).total_seconds(), 0.0))
        seen = self.state.seen_at.pop((meta["namespace"], meta["name"]), None)
        if attempt == 1 and seen is not None:
            metrics.SEEN_TO_DISPATCHED.observe(time.monotonic() - seen)
        if browser:
            await self.ensure_attempt_objects(stored, agent)
        else:
            await self.cloud.invoke(stored, agent, now)
        metrics.DISPATCH_SECONDS.observe(time.perf_counter() - t0)
        if meta["uid"] in self.cloud.refused:
            self.state.wake.set()  # fail it on the next pass, not the next resync

    def key_text(self, uid: str, attempt: int) -> str:
        return encode_key(derive_attempt_key(self.masters[0], uid, attempt))

    def client_cert(self, obj: Mapping[str, Any], attempt: int) -> tuple[str, str] | None:
        """Under mutual TLS, the attempt's client certificate, living as long as it may."""
        if self.cfg.client_ca is None:
            return None
        lifetime = timedelta(seconds=int(obj["spec"].get("timeoutSeconds", 300)))
        return issue_attempt_certificate(*self.cfg.client_ca, obj["metadata"]["uid"], attempt,
                                         datetime.now(UTC), lifetime)  # fmt: skip

    async def ensure_attempt_objects(
        self, obj: Mapping[str, Any], agent: Mapping[str, Any]
    ) -> None:
        """The key Secret, then the Job; both named by (task, attempt), so never twice.
        The API server refusing either fails the attempt at once with its message."""
        meta, status = obj["metadata"], obj.get("status") or {}
        attempt = int(status["attempt"])
        name = agent["metadata"]["name"]
        why = await self.secrets_refused(obj)
        if why is not None:
            self.cloud.refused[meta["uid"]] = Refusal(attempt, "SecretRefused", why, False)
            self.state.wake.set()
            return
        made = (
            ("key Secret", self.kube.create_secret,
             key_secret(obj, attempt, name, self.key_text(meta["uid"], attempt),
                        self.client_cert(obj, attempt))),
            ("Job", self.kube.create_job, browser_job(obj, agent, attempt, self.cfg)),
        )  # fmt: skip
        for what, create, manifest in made:
            try:
                await create(manifest)
            except ApiError as e:
                if e.code in (401, 429) or e.code >= 500:
                    raise  # the API server's trouble (or our token's), not the attempt's
                self.cloud.refused[meta["uid"]] = Refusal(
                    attempt,
                    "DispatchFailed",
                    f"the API server refused the attempt's {what} "
                    f"{manifest['metadata']['name']}: {e.message}",
                    e.code not in INVALID,
                )
                self.state.wake.set()
                return

    async def secrets_refused(self, obj: Mapping[str, Any]) -> str | None:
        """Why a browser attempt may not use the Secrets its payload names, or None. Each
        must exist and opt in; only its metadata is read (the kubelet reads the value)."""
        ns = obj["metadata"]["namespace"]
        for name, _ in task_secrets.references((obj.get("spec") or {}).get("payload") or {}):
            meta = await self.kube.secret_metadata(ns, name)
            if meta is None:
                return f"Secret {ns}/{name} (named in spec.payload) does not exist"
            if not opted_in(meta):
                return not_opted_in_message(ns, name)
        return None


def jitter() -> float:
    """A draw for retry jitter (spreading retries, not secrecy)."""
    return random.random()  # noqa: S311
