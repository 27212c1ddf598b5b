"""The Reconciler's own orchestration, without a cluster: what it writes, in which order,
and what it does when a write fails (issue #13 items 6 and 10, issue #20).

The API is an in-memory store (``Store``) that keeps objects by resourceVersion the way
the API server does for these calls (a merge patch guarded by resourceVersion, 409 on a
stale one) and can be told to fail calls. The decisions themselves are tested row by
row in test_upkeep.py; here: that they are carried out, retried and kept off the
dispatch path.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from wallestars_api.events import EventQueue
from wallestars_api.kubeclient import ApiError
from wallestars_operator.executors import DispatchError, HttpExecutor
from wallestars_operator.manifests import AttemptConfig
from wallestars_operator.reconcile import HOUSEKEEPING_IN_FLIGHT, Reconciler
from wallestars_operator.state import State


def ago(seconds: float) -> str:
    """A timestamp ``seconds`` before the moment of the call (never of the import: a test
    may run long after this module was imported, and the operator decides with its now)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """AgentTasks kept like the API server keeps them, for the Kube calls the operator makes."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 100
        self.fail_next: list[ApiError] = []  # raised by the next status patches, in order
        self.calls: list[str] = []
        self.hold_deletes = asyncio.Event()  # deletions wait for this (a slow API)
        self.hold_deletes.set()

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.tasks[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    async def patch_task_status(
        self, obj: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(f"patch {obj['metadata']['name']} {status.get('phase')}")
        if self.fail_next:
            raise self.fail_next.pop(0)
        cur = self.tasks[(obj["metadata"]["namespace"], obj["metadata"]["name"])]
        if cur["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            return None  # 409
        merged = {**(cur.get("status") or {}), **status}
        cur["status"] = {k: v for k, v in merged.items() if v is not None}
        return self.add(cur)

    async def delete_task(self, obj: Mapping[str, Any]) -> None:
        self.calls.append(f"delete {obj['metadata']['name']}")
        await self.hold_deletes.wait()
        self.tasks.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        return None

    async def delete_job(self, ns: str, name: str) -> None:
        self.calls.append(f"delete job {name}")

    async def patch_agent_status(self, ns: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(f"agent {name}")

    async def event(
        self, ref: Mapping[str, str], reason: str, message: str, warning: bool = False
    ) -> None:
        pass


class Refusing:
    """An http executor whose function refuses every invocation."""

    def __init__(self) -> None:
        self.invoked = 0

    async def invoke(self, cloud: Any, body: bytes, secret: Any) -> None:
        self.invoked += 1
        raise DispatchError("the function answered HTTP 401: wrong token")

    async def health(self, cloud: Any, secret: Any) -> str | None:
        return None

    async def close(self) -> None:
        pass


def task(name: str, **status: Any) -> dict[str, Any]:
    created = ago(5)
    return {"metadata": {"name": name, "namespace": "n", "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"agentRef": "fn", "type": "custom", "payload": {}, "priority": 5,
                     "retries": {"limit": 3, "backoffSeconds": 60}, "ttlSecondsAfterFinished": 1},
            "status": status}  # fmt: skip


AGENT: dict[str, Any] = {"metadata": {"name": "fn", "namespace": "n", "resourceVersion": "1"},
         "spec": {"type": "cloud", "capabilities": ["custom"], "concurrency": 10,
                  "cloud": {"provider": "http", "http": {"url": "https://fn.example/"}}}}  # fmt: skip


def world() -> tuple[Reconciler, Store, State, Refusing]:
    store, state = Store(), State()
    events = EventQueue(store.event)
    rec = Reconciler(state, store, events, [b"k" * 32], AttemptConfig("https://cb"), 5.0)  # type: ignore[arg-type]
    fn = Refusing()
    rec.cloud.executors.http = fn  # type: ignore[assignment]
    rec.cloud.health[("n", "fn")] = (None, float("inf"))  # probed: healthy (no probe now)
    state.put("agents", AGENT)
    return rec, store, state, fn


async def settle(rec: Reconciler, state: State) -> None:
    """Let the background writes run, feeding what they stored back as the watch would."""
    for _ in range(50):
        await asyncio.sleep(0)
    if rec.busy:
        await asyncio.wait(list(rec.busy.values()), timeout=2)


async def test_a_refused_invocation_is_failed_even_when_the_first_failure_write_is_lost() -> None:
    rec, store, state, fn = world()
    state.put("tasks", store.add(task("t")))
    await rec.tick()  # dispatch, invoke (refused)
    await settle(rec, state)
    assert fn.invoked == 1
    assert store.tasks[("n", "t")]["status"]["phase"] == "Dispatched"
    # The API server fails the write that records the refusal.
    store.fail_next.append(ApiError(500, "InternalError", "etcd leader changed"))
    await rec.tick()
    await settle(rec, state)
    assert store.tasks[("n", "t")]["status"]["phase"] == "Dispatched"
    assert ("n", "t") in rec.backoff  # not forgotten: decided again after a backoff
    await asyncio.sleep(0.25)  # the first backoff is 0.1-0.2 s
    await rec.tick()
    await settle(rec, state)
    st = store.tasks[("n", "t")]["status"]
    assert st["phase"] == "Retrying" and st["attempts"][-1]["reason"] == "DispatchFailed", st
    assert "HTTP 401" in st["attempts"][-1]["message"]
    assert fn.invoked == 1  # never invoked twice for one attempt
    assert ("n", "t") not in rec.backoff


async def test_a_write_applied_but_answered_500_is_not_written_twice() -> None:
    """The failure landed although the API server answered 500: once the watch shows it,
    nothing more is written for that attempt."""
    rec, store, state, _ = world()
    state.put("tasks", store.add(task("t")))
    await rec.tick()
    await settle(rec, state)
    store.fail_next.append(ApiError(500, "InternalError", "applied, answer lost"))
    await rec.tick()
    await settle(rec, state)
    # The write had in fact landed: the watch now delivers Retrying.
    cur = store.tasks[("n", "t")]
    later = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cur["status"] = {**cur["status"], "phase": "Retrying", "reason": "DispatchFailed",
                     "nextAttemptTime": later}  # fmt: skip
    state.put("tasks", store.add(cur))
    store.calls.clear()
    await asyncio.sleep(0.25)
    await rec.tick()
    await settle(rec, state)
    # (a waiting reason, BackingOff, may be written; no second failure, no new dispatch)
    assert not [c for c in store.calls if c.split()[-1] in ("Retrying", "Failed", "Dispatched")], (
        store.calls
    )


async def test_expiring_tasks_never_hold_up_a_dispatch() -> None:
    """Fifty finished tasks expire at once on a slow API: the new task is dispatched in
    the same pass, and at most HOUSEKEEPING_IN_FLIGHT deletions are in flight."""
    rec, store, state, _ = world()
    done = ago(30)
    for i in range(50):
        state.put("tasks", store.add(task(f"old{i}", phase="Succeeded", completionTime=done)))
    state.put("tasks", store.add(task("new")))
    store.hold_deletes.clear()  # every deletion hangs
    await rec.tick()
    for _ in range(50):
        await asyncio.sleep(0)
    assert store.tasks[("n", "new")]["status"]["phase"] == "Dispatched"
    assert len(rec.housekeeping_busy) == HOUSEKEEPING_IN_FLIGHT
    assert sum(c.startswith("delete") for c in store.calls) <= HOUSEKEEPING_IN_FLIGHT
    store.hold_deletes.set()
    await settle(rec, state)


async def test_an_api_error_reading_a_secret_is_not_a_refusal() -> None:
    """A 503 on the Secret's read says nothing about the Secret: the attempt is not failed
    (that would burn a retry); nothing was sent, so it is invoked again later."""
    rec, store, state, _ = world()
    agent = copy.deepcopy(AGENT)
    agent["spec"]["cloud"]["http"]["authHeaderSecretRef"] = {"name": "s", "key": "k"}
    state.put("agents", agent)
    # The real http executor: it reads the Secret before it sends anything.
    rec.cloud.executors.http = HttpExecutor()

    async def busy(ns: str, name: str) -> dict[str, Any] | None:
        raise ApiError(503, "ServiceUnavailable", "try later")

    store.get_secret = busy  # type: ignore[method-assign]
    state.put("tasks", store.add(task("t")))
    await rec.tick()
    await settle(rec, state)
    assert store.tasks[("n", "t")]["status"]["phase"] == "Dispatched"
    assert "uid-t" not in rec.cloud.refused
    assert ("uid-t", 1) not in rec.cloud.invoked  # so upkeep's Invoke row sends it later


async def test_a_replica_that_lost_the_lease_drops_the_writes_it_had_decided() -> None:
    acting = [True]
    rec, store, state, fn = world()
    rec.acting = lambda: acting[0]
    state.put("tasks", store.add(task("t")))
    await rec.sem.acquire()  # the write waits for its turn...
    await rec.tick()
    acting[0] = False  # ...and the lease is lost meanwhile
    rec.sem.release()
    await settle(rec, state)
    assert "phase" not in store.tasks[("n", "t")]["status"] and fn.invoked == 0


async def test_a_job_whose_pod_is_gone_still_ends_its_attempt() -> None:
    """The Job failed and its pod is gone (garbage-collected): read once, then decided
    with what is known (CallbackMissing), never read again and again until the timeout."""
    rec, store, state, _ = world()
    state.put("agents", {"metadata": {"name": "br", "namespace": "n", "resourceVersion": "1"},
                         "spec": {"type": "browser", "capabilities": ["custom"], "browser": {}}})  # fmt: skip
    t = task("b", phase="Running", attempt=1, agent="br",
             dispatchTime=ago(20))  # fmt: skip
    t["spec"]["agentRef"] = "br"
    state.put("tasks", store.add(t))
    from wallestars_operator.upkeep import job_of

    ended = ago(10)
    job = job_of(t) or ""
    state.put("jobs", {"metadata": {"name": job, "namespace": "n", "uid": "j", "resourceVersion": "5"},
                       "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                  "lastTransitionTime": ended}]}})  # fmt: skip
    reads = []

    async def job_pod(ns: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return None

    store.job_pod = job_pod  # type: ignore[attr-defined]
    for _ in range(3):
        await rec.tick()
        await settle(rec, state)
    st = store.tasks[("n", "b")]["status"]
    assert st["phase"] == "Retrying" and st["attempts"][-1]["reason"] == "CallbackMissing", st
    assert reads == [job]
