"""The reconcile loop: look at everything, decide with pure functions, act, repeat.

Level-triggered: every pass starts from the caches (the API as watched), so a restart,
a lost event or a duplicate one changes nothing. Each status write carries the
resourceVersion it was decided on; a stale decision is refused by the API server and
simply taken again on the next pass.
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
from wallestars_api.conditions import set_condition
from wallestars_api.lifecycle import (
    LIVE,
    TERMINAL,
    Phase,
    Transition,
    attempt_failed,
    dispatch,
    end,
    parse_ts,
    phase_of,
    wait,
)
from wallestars_sdk.keys import derive_attempt_key, encode_key

from wallestars_operator import metrics
from wallestars_operator.events import EventQueue
from wallestars_operator.executors import DispatchError, Executors, encode
from wallestars_operator.kube import Kube
from wallestars_operator.manifests import (
    AttemptConfig,
    attempt_name,
    browser_job,
    invocation,
    key_secret,
)
from wallestars_operator.outcomes import job_end
from wallestars_operator.ratelimit import TokenBucket
from wallestars_operator.scheduling import AgentView, TaskView, Wait, plan
from wallestars_operator.state import State

log = logging.getLogger("wallestars.operator")
# How long a live browser attempt may go without its Job before the Job is (re)made:
# the write of Dispatched comes first, so a crash between the two is repaired here.
JOB_REPAIR_SECONDS = 3.0
TIMEOUT_GRACE_SECONDS = 10.0
# A waiting task's reason is written when it changes; its queue position alone is
# refreshed at most this often, so a long queue draining does not rewrite every task
# on every dispatch (that cost O(queue) writes per dispatch: bench/RESULTS.md).
POSITION_REFRESH_SECONDS = 10.0
# And all position-only refreshes together at most this many writes per second (oldest
# first): a queue of thousands would otherwise cost hundreds of writes a second.
POSITION_WRITES_PER_SECOND = 5.0
# An agent's auth header Secret is read again after this (so a rotated one is picked up).
SECRET_TTL_SECONDS = 30.0
# How often a cloud Agent's function is probed for its Healthy condition.
HEALTH_SECONDS = 30.0
# A cloud attempt left Dispatched by a crashed operator, with no callback, is invoked again after this.
REDELIVER_SECONDS = 5.0


class Reconciler:
    def __init__(
        self,
        state: State,
        kube: Kube,
        events: EventQueue,
        masters: list[bytes],
        cfg: AttemptConfig,
        callback_grace: float,
    ) -> None:
        self.state = state
        self.kube = kube
        self.events = events
        self.masters = masters
        self.cfg = cfg
        self.callback_grace = callback_grace
        self.executors = Executors()
        # Cloud agents' health probes: (namespace, name) -> (problem or None, when probed).
        self.health: dict[tuple[str, str], tuple[str | None, float]] = {}
        self.sem = asyncio.Semaphore(32)
        self.agent_written: dict[tuple[str, str], tuple[Any, float]] = {}
        # Attempts this process has invoked. After a crash the set is empty, so an http
        # attempt left Dispatched with no callback is invoked again (at least once).
        self.invoked: set[tuple[str, int]] = set()  # (uid, attempt); pruned in tick()
        # When each waiting task's queue position was last written (throttling only).
        self.position_written: dict[tuple[str, str], float] = {}
        self.position_budget = TokenBucket(
            POSITION_WRITES_PER_SECOND, int(POSITION_WRITES_PER_SECOND * 4)
        )
        self.secrets: dict[tuple[str, str, str], tuple[str | None, float]] = {}
        # Writes in flight per task, and the agent each in-flight dispatch has taken a slot of.
        self.busy: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.reserved: dict[tuple[str, str], str] = {}

    async def close(self) -> None:
        if self.busy:  # let writes in flight finish; anything cut off is redone on restart
            await asyncio.wait(list(self.busy.values()), timeout=5)
        await self.executors.close()

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

    # --- one pass ---------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass. Dispatches and waiting-reason writes run in the background (``spawn``),
        so a pass costs CPU only and a task created during a slow write is not held up."""
        now = datetime.now(UTC)
        store = self.state.tasks
        # Only live tasks and finished ones whose TTL is due (State's index): a pass costs
        # the same with 10,000 finished tasks kept as with none.
        current = [(k, store[k]) for k in self.state.live]
        due = [o for k, o in current if k not in self.busy and needs_care(o, now)]
        due += [
            store[k] for k, when in self.state.expiry.items() if when <= now and k not in self.busy
        ]
        await self._bounded([functools.partial(self.maintain, o, now) for o in due])
        tasks = [
            o for k in self.state.live if not ((o := store[k]).get("spec") or {}).get("cancel")
        ]
        agents = dict(self.state.agents)
        self.probe_health(agents)
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
            if t.key not in self.busy:
                self.reserved[t.key] = a.name
                self.spawn(
                    t.key,
                    functools.partial(self.start_attempt, by_key[t.key], agents[(a.namespace, a.name)], now),
                )  # fmt: skip
        mono = time.monotonic()
        stale: list[tuple[float, tuple[str, str]]] = []
        for k, w in p.waiting.items():
            if k in self.busy:
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
        await self.agent_status(agents, p.load, p.queued, now)
        if len(self.position_written) > 2 * len(p.waiting) + 1000:  # forget tasks no longer waiting
            self.position_written = {
                k: v for k, v in self.position_written.items() if k in p.waiting
            }
        if len(self.invoked) > 2 * len(tasks) + 1000:  # keep only attempts still live
            live = {
                (o["metadata"]["uid"], int((o.get("status") or {}).get("attempt") or 0))
                for o in tasks
            }
            self.invoked &= live

    def _write_wait(self, obj: Mapping[str, Any], w: Wait, now: datetime, mono: float) -> None:
        tr = wait(obj, w.reason, w.message, w.position, now)
        if tr is not None:
            k = self.state.key("tasks", obj)
            self.position_written[k] = mono
            self.spawn(k, functools.partial(self._apply_none, obj, tr))

    def spawn(self, key: tuple[str, str], fn: Callable[[], Awaitable[None]]) -> None:
        """Run one task's write in the background; at most one in flight per task."""

        async def run() -> None:
            async with self.sem:
                try:
                    await fn()
                except Exception:
                    log.exception("reconcile step failed; the next pass tries again")

        t = asyncio.create_task(run())
        self.busy[key] = t

        def done(_: asyncio.Task[None]) -> None:
            self.busy.pop(key, None)
            self.reserved.pop(key, None)
            self.state.wake.set()  # the written object is in the cache: look again

        t.add_done_callback(done)

    async def _apply_none(self, obj: Mapping[str, Any], tr: Transition) -> None:
        await self.apply(obj, tr)

    async def _bounded(self, fns: list[Callable[[], Awaitable[None]]]) -> None:
        async def run(fn: Callable[[], Awaitable[None]]) -> None:
            async with self.sem:
                try:
                    await fn()
                except Exception:
                    log.exception("reconcile step failed; the next pass tries again")

        await asyncio.gather(*(run(f) for f in fns))

    # --- per task ---------------------------------------------------------------------

    async def maintain(self, obj: Mapping[str, Any], now: datetime) -> None:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        phase = phase_of(obj)
        ns, name = meta["namespace"], meta["name"]
        if phase in TERMINAL:
            ttl = spec.get("ttlSecondsAfterFinished")
            done = parse_ts(status.get("completionTime"))
            if ttl is not None and done is not None and done + timedelta(seconds=int(ttl)) <= now:
                await self.kube.delete_task(obj)
            return
        job = (
            attempt_name(name, meta["uid"], int(status.get("attempt") or 0))
            if status.get("attempt")
            else None
        )
        browser = self._is_browser(status.get("agent"), ns)
        if spec.get("cancel"):
            if phase in LIVE and browser and job:
                await self.kube.delete_job(ns, job)
            await self.apply(
                obj, end(obj, Phase.CANCELLED, "Cancelled", "cancelled (spec.cancel is true)", now)
            )
            return
        created = parse_ts(meta.get("creationTimestamp"))
        deadline = spec.get("deadlineSeconds")
        if (
            deadline is not None
            and created is not None
            and created + timedelta(seconds=int(deadline)) <= now
        ):
            if phase in LIVE and browser and job:
                await self.kube.delete_job(ns, job)
            await self.apply(
                obj,
                end(
                    obj,
                    Phase.TIMED_OUT,
                    "DeadlineExceeded",
                    f"the task did not finish within spec.deadlineSeconds ({deadline}s)",
                    now,
                ),
            )
            return
        if phase in (None, Phase.QUEUED) and spec.get("queueTimeoutSeconds") is not None:
            since = parse_ts((status.get("queue") or {}).get("since")) or created
            limit = int(spec["queueTimeoutSeconds"])
            if since is not None and since + timedelta(seconds=limit) <= now:
                await self.apply(
                    obj,
                    end(
                        obj,
                        Phase.TIMED_OUT,
                        "QueueTimeout",
                        f"no agent took the task within spec.queueTimeoutSeconds ({limit}s)",
                        now,
                    ),
                )
            return
        if phase not in LIVE:
            return
        dispatched = parse_ts(status.get("dispatchTime")) or now
        timeout = int(spec.get("timeoutSeconds", 300))
        if dispatched + timedelta(seconds=timeout + TIMEOUT_GRACE_SECONDS) <= now:
            if browser and job:
                await self.kube.delete_job(ns, job)
            await self.apply(
                obj,
                attempt_failed(
                    obj,
                    "Timeout",
                    f"attempt {status.get('attempt')} ran past spec.timeoutSeconds ({timeout}s)",
                    True,
                    now,
                    jitter(),
                ),
            )
            return
        if not browser:
            await self.redeliver(obj, now, dispatched)
            return
        if not job:
            return
        job_obj = self.state.jobs.get((ns, job))
        if job_obj is None:
            if (now - dispatched).total_seconds() > JOB_REPAIR_SECONDS:
                agent = self.state.agents.get((ns, status.get("agent", "")))
                if agent is not None:
                    await self.ensure_attempt_objects(obj, agent)
            return
        pod = self.state.pods.get((ns, job))
        if pod is None and job_end(job_obj, None) is not None:
            # Pods are not watched (each costs ~5 watch events); read the attempt's pod
            # once, when its Job ended with no final callback, for the exit code and why.
            pod = await self.kube.job_pod(ns, job)
            if pod is not None:
                self.state.put("pods", pod)
        ended = job_end(job_obj, pod)
        if ended is not None and (now - ended.finished).total_seconds() >= self.callback_grace:
            await self.apply(
                obj,
                attempt_failed(
                    obj, ended.code, ended.message, True, now, jitter(), ended.exit_code
                ),
            )

    async def redeliver(self, obj: Mapping[str, Any], now: datetime, dispatched: datetime) -> None:
        """Invoke again a cloud attempt a crashed predecessor dispatched but may never have sent."""
        meta, status = obj["metadata"], obj.get("status") or {}
        attempt = int(status.get("attempt") or 0)
        if (meta["uid"], attempt) in self.invoked or phase_of(obj) != Phase.DISPATCHED:
            return
        if any(c.get("attempt") == attempt for c in status.get("callbacks") or []):
            return  # the agent has called back: it was invoked
        if (now - dispatched).total_seconds() < REDELIVER_SECONDS:
            return
        agent = self.state.agents.get((meta["namespace"], status.get("agent", "")))
        if agent is not None:
            log.info(
                "invoking %s/%s attempt %d again after a restart",
                meta["namespace"],
                meta["name"],
                attempt,
            )
            await self.invoke(obj, agent, now)

    def _is_browser(self, agent: str | None, ns: str) -> bool:
        a = self.state.agents.get((ns, agent or ""))
        return a is not None and (a.get("spec") or {}).get("type") == "browser"

    # --- dispatch ---------------------------------------------------------------------

    async def start_attempt(
        self, obj: Mapping[str, Any], agent: Mapping[str, Any], now: datetime
    ) -> None:
        meta = obj["metadata"]
        attempt = int((obj.get("status") or {}).get("attempt") or 0) + 1
        a_spec = agent.get("spec") or {}
        browser = a_spec.get("type") == "browser"
        job = attempt_name(meta["name"], meta["uid"], attempt) if browser else None
        t0 = time.perf_counter()
        # Dispatched is written before the agent can call back, so its first callback is
        # accepted; a crash after this write is repaired by maintain() (JOB_REPAIR_SECONDS).
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
            await self.invoke(stored, agent, now)
        metrics.DISPATCH_SECONDS.observe(time.perf_counter() - t0)

    def key_text(self, uid: str, attempt: int) -> str:
        return encode_key(derive_attempt_key(self.masters[0], uid, attempt))

    async def ensure_attempt_objects(
        self, obj: Mapping[str, Any], agent: Mapping[str, Any]
    ) -> None:
        """The key Secret, then the Job; both named by (task, attempt), so never twice."""
        meta, status = obj["metadata"], obj.get("status") or {}
        attempt = int(status["attempt"])
        name = agent["metadata"]["name"]
        await self.kube.create_secret(
            key_secret(obj, attempt, name, self.key_text(meta["uid"], attempt))
        )
        await self.kube.create_job(browser_job(obj, agent, attempt, self.cfg))

    async def invoke(self, obj: Mapping[str, Any], agent: Mapping[str, Any], now: datetime) -> None:
        """Hand an attempt to a cloud agent; a refusal is a failed attempt."""
        meta, status = obj["metadata"], obj.get("status") or {}
        attempt = int(status["attempt"])
        cloud = (agent.get("spec") or {}).get("cloud") or {}
        provider = cloud.get("provider")
        self.invoked.add((meta["uid"], attempt))  # before sending: never invoke twice from here
        body = invocation(
            obj,
            attempt,
            agent["metadata"]["name"],
            self.key_text(meta["uid"], attempt),
            self.cfg,
            now,
        )
        outcome = "ok"
        ns = meta["namespace"]
        try:
            await self.executors.of(provider).invoke(
                cloud, encode(body), lambda name, key: self.secret_value(ns, name, key)
            )
        except (DispatchError, aiohttp.ClientError, TimeoutError) as e:
            outcome = "error"
            latest = self.state.tasks.get((meta["namespace"], meta["name"]), obj)
            if (
                phase_of(latest) in LIVE
                and int((latest.get("status") or {}).get("attempt") or 0) == attempt
            ):
                await self.apply(
                    latest,
                    attempt_failed(
                        latest,
                        "DispatchFailed",
                        str(e) or type(e).__name__,
                        True,
                        datetime.now(UTC),
                        jitter(),
                    ),
                )
        finally:
            metrics.CLOUD_INVOCATIONS.labels(provider or "unknown", outcome).inc()

    async def secret_value(self, ns: str, name: str, key: str) -> str | None:
        """A Secret's value, kept for SECRET_TTL_SECONDS: one read per agent, not per task."""
        k = (ns, name, key)
        hit = self.secrets.get(k)
        if hit is not None and time.monotonic() - hit[1] < SECRET_TTL_SECONDS:
            return hit[0]
        value = await self.kube.get_secret_value(ns, name, key)
        self.secrets[k] = (value, time.monotonic())
        return value

    # --- agents -----------------------------------------------------------------------

    def problem(self, k: tuple[str, str], agent: Mapping[str, Any]) -> str | None:
        """Why an Agent cannot take tasks now: its configuration, or its last health probe."""
        return agent_problem(agent) or self.health.get(k, (None, 0.0))[0]

    def probe_health(self, agents: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """Start a health probe of each cloud Agent not probed for HEALTH_SECONDS."""
        mono = time.monotonic()
        for k, a in agents.items():
            spec = a.get("spec") or {}
            if spec.get("type") != "cloud" or agent_problem(a) is not None:
                continue
            last = self.health.get(k)
            key = (f"agent-health/{k[0]}", k[1])
            if (last is not None and mono - last[1] < HEALTH_SECONDS) or key in self.busy:
                continue
            self.health[k] = (last[0] if last else None, mono)  # no second probe meanwhile
            self.spawn(key, functools.partial(self._probe, k, spec.get("cloud") or {}))

    async def _probe(self, k: tuple[str, str], cloud: Mapping[str, Any]) -> None:
        try:
            problem = await self.executors.of(cloud.get("provider")).health(
                cloud, lambda name, key: self.secret_value(k[0], name, key)
            )
        except DispatchError as e:
            problem = str(e)
        self.health[k] = (problem, time.monotonic())

    async def agent_status(self, agents: Mapping[tuple[str, str], Mapping[str, Any]], load: Mapping[tuple[str, str], int],
                           queued: Mapping[tuple[str, str], int], now: datetime) -> None:  # fmt: skip
        mono = time.monotonic()
        due = []
        for k, a in agents.items():
            last = self.agent_written.get(k)
            cheap = (
                load.get(k, 0),
                queued.get(k, 0),
                agent_problem(a),
                bool((a.get("spec") or {}).get("paused")),
                self.health.get(k, (None, 0.0))[0],
            )
            # Write on change, at most every 2 s per agent, and a heartbeat every 60 s.
            if (
                last is not None
                and (last[0] == cheap or mono - last[1] < 2)
                and mono - last[1] < 60
            ):
                continue
            due.append((k, a, cheap))
        if not due:
            return
        # The statistics read every finished task: only when some agent's status is written.
        finished: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for o in self.state.tasks.values():
            st = o.get("status") or {}
            if phase_of(o) in TERMINAL and st.get("agent"):
                finished.setdefault((o["metadata"]["namespace"], st["agent"]), []).append(st)
        for k, a, cheap in due:
            active, waiting, problem, paused, sick = cheap
            recent = sorted(finished.get(k, []), key=lambda s: s.get("completionTime", ""))[-100:]
            rate = (
                round(sum(1 for s in recent if s.get("phase") == "Succeeded") / len(recent), 3)
                if recent
                else None
            )
            durations = [float(s["durationSeconds"]) for s in recent if "durationSeconds" in s]
            mean = round(sum(durations) / len(durations), 3) if durations else None
            ready = problem is None
            t = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            conds = list((a.get("status") or {}).get("conditions") or [])
            reason, msg = ("Paused", "spec.paused is true: no new task is dispatched") if paused and ready else (
                ("Ready", "the agent takes tasks") if ready else ("InvalidConfiguration", problem or ""))  # fmt: skip
            conds = set_condition(conds, "Ready", ready and not paused, reason, msg, t)
            if ready and sick is not None:  # configured right, but its function is not well
                ready, reason, msg = False, "Unhealthy", sick
                conds = set_condition(conds, "Ready", False, "Unhealthy", sick, t)
            conds = set_condition(
                conds, "Healthy", ready, reason if not ready else "Healthy", msg, t
            )
            status: dict[str, Any] = {
                "activeTasks": active,
                "queuedTasks": waiting,
                "conditions": conds,
                "lastHeartbeatTime": t,
            }
            if rate is not None:
                status["successRate"] = rate
            if mean is not None:
                status["meanDurationSeconds"] = mean
            await self.kube.patch_agent_status(k[0], k[1], status)
            self.agent_written[k] = (cheap, time.monotonic())
            metrics.agent(k, active, ready and not paused)


def needs_care(obj: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``maintain`` could have anything to do for this task now.

    Cheap and pure, so a pass over 10,000 finished tasks costs a dict lookup each: a
    finished task only matters once its TTL is due; a queued one only with a cancel,
    a deadline or a queue timeout; a live attempt always (timeouts, Job, redelivery).
    """
    spec = obj.get("spec") or {}
    phase = phase_of(obj)
    if phase in TERMINAL:
        ttl = spec.get("ttlSecondsAfterFinished")
        done = parse_ts((obj.get("status") or {}).get("completionTime"))
        return ttl is not None and done is not None and done + timedelta(seconds=int(ttl)) <= now
    if phase in LIVE:
        return True
    return bool(
        spec.get("cancel")
        or spec.get("deadlineSeconds") is not None
        or spec.get("queueTimeoutSeconds") is not None
    )


def jitter() -> float:
    """A draw for retry jitter (spreading retries, not secrecy)."""
    return random.random()  # noqa: S311


def agent_problem(agent: Mapping[str, Any]) -> str | None:
    """Why an Agent cannot take tasks, or None. (The CRD refuses most of this already.)"""
    spec = agent.get("spec") or {}
    if spec.get("type") == "browser" and "browser" not in spec:
        return "spec.browser is not set"
    if spec.get("type") == "cloud":
        cloud = spec.get("cloud") or {}
        if cloud.get("provider") == "http" and not (cloud.get("http") or {}).get("url"):
            return "spec.cloud.http.url is not set"
        if cloud.get("provider") == "aws-lambda" and not (cloud.get("aws") or {}).get(
            "functionName"
        ):
            return "spec.cloud.aws.functionName is not set"
        if cloud.get("provider") == "azure-functions" and not (cloud.get("azure") or {}).get(
            "functionURL"
        ):
            return "spec.cloud.azure.functionURL is not set"
    return None
