"""Operator benchmark for `http` cloud agents: writes per task, throughput, latency, memory.

    .venv/bin/python bench/operator_http.py [--phases writes,throughput,latency,memory]

Each phase starts its own control plane, the webhook service (under its chart RBAC),
the test function (tests/agents/http_function.py: answers 202 and calls back success
at once) and the operator, then:

- writes: ``--audit-tasks`` tasks with the API server's audit log on; every write is
  attributed to the object it touched (the task, its status, Events about it).
- throughput: ``--tasks`` tasks created as fast as 8 requests in flight allow, agent
  concurrency ``--slots``; from the first create to the last Succeeded (seen by a watch),
  with the CPU each process used.
- latency: tasks offered open loop at ``--rate``/s for ``--seconds``; created (the POST's
  201) to first seen dispatched (a watch in this process), p50/p99.
- memory: ``--memory-tasks`` tasks run to Succeeded and kept; the operator's resident
  memory (now and peak) with all of them in its caches.
- ceiling: the API server's raw capacity for the writes a task needs (``--raw-tasks``
  creates plus their status merge patches, a plain aiohttp client, the operator
  stopped), then ``--tasks`` end to end on the same control plane: tasks/min as a
  fraction of (raw writes/s / writes per task).
- flood: created -> Dispatched at ``--rate``/s for ``--seconds``, quiet, then while
  another user keeps ``--flood-in-flight`` LISTs of ``--flood-pods`` pods under way
  (bench/flood.py), then the same with the chart's API Priority and Fairness objects.
- expiry: ``--expire-tasks`` finished tasks whose ttlSecondsAfterFinished all fall due
  at one instant (their completionTime set alike), while new tasks are offered at
  ``--rate``/s from 10 s before that instant for ``--seconds``: created -> dispatched
  of the new tasks (all, and those created in the 30 s after the instant), and how long
  the deletions took.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import localcluster
from harness import (
    REPO,
    SYSTEM_NS,
    Kubectl,
    audit_events,
    free_port,
    http_agent,
    scrape,
    token_kubeconfig,
)
from wallestars_api.kubeclient import MERGE_PATCH, KubeClient

from bench.load import (
    CREATE_LATENCY,
    TASKS,
    CpuMeter,
    Env,
    bench_environment,
    histogram_quantiles,
    percentiles,
    rss_mb,
    run_tasks,
    task_body,
    writer,
)

NS = "bench"
DISPATCHED = ("Dispatched", "Running", "Succeeded", "Failed", "TimedOut", "Cancelled")


def http_function(a: argparse.Namespace) -> Callable[[Kubectl], list[subprocess.Popen[bytes]]]:
    """The test function on a free port, and the `http` Agent "fn" pointing at it."""

    def setup(k: Kubectl) -> list[subprocess.Popen[bytes]]:
        port = free_port()
        fn = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "agents" / "http_function.py"), str(port)]
        )
        time.sleep(1.0)
        http_agent(k, f"http://127.0.0.1:{port}/", slots=a.slots)
        return [fn]

    return setup


@contextlib.contextmanager
def environment(a: argparse.Namespace, audit: bool = False) -> Iterator[Env]:
    with bench_environment("bench-operator", NS, http_function(a), a.qps, a.burst, audit) as env:
        yield env


def bodies(prefix: str, n: int) -> list[dict[str, Any]]:
    return [task_body(f"{prefix}{i}", "fn") for i in range(n)]


def limits(a: argparse.Namespace, env: Env, seconds: float) -> dict[str, Any]:
    calls = env.op.metric("wallestars_operator_api_requests")
    return {"qps_limit": a.qps, "burst": a.burst, "operator_api_calls": calls,
            "operator_calls_per_second": round(calls / seconds, 1),
            "rate_limit_wait_seconds": env.op.metric("wallestars_operator_rate_limit_wait_seconds")}  # fmt: skip


def profile(a: argparse.Namespace, env: Env) -> subprocess.Popen[bytes] | None:
    """--profile FILE: sample the operator with py-spy for the first 15 s (flame graph)."""
    if not a.profile:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "-o", a.profile, "-d", "15", "-p", str(env.op.proc.pid)]
    return subprocess.Popen([*argv, "-f", "raw"] if a.profile.endswith(".txt") else argv)


def pass_stats(env: Env) -> dict[str, float]:
    """Reconcile passes: how many and their mean duration (operator's histogram)."""
    n = env.op.metric("wallestars_operator_reconcile_pass_duration_seconds_count")
    total = env.op.metric("wallestars_operator_reconcile_pass_duration_seconds_sum")
    return {"passes": n, "mean_ms": round(total / n * 1000, 1) if n else float("nan")}


def phase_writes(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a, audit=True) as env:
        asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("w", a.audit_tasks)))
        time.sleep(2.0)  # Events are sent after the transition; let the queue drain
        return count_writes(env.cluster, "w")


def phase_throughput(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as env:
        meter = CpuMeter(env.pids())
        meter.start()
        run = asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("t", a.tasks)))
        watch, created, t0 = run.tasks, run.created, run.t0
        done = max(watch.first(n, ("Succeeded",)) or 0.0 for n in created)
        elapsed = done - t0
        cpu = meter.stop()
        return {"tasks": a.tasks, "slots": a.slots, "seconds": round(elapsed, 1),
                "per_minute": round(a.tasks / elapsed * 60),
                "create_seconds": round(max(created.values()) - t0, 1),
                **limits(a, env, elapsed), **cpu, "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


def phase_latency(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as env:
        n = int(a.rate * a.seconds)
        meter = CpuMeter(env.pids())
        meter.start()
        spy = profile(a, env)
        run = asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("l", n), rate=a.rate))
        watch, created, t0 = run.tasks, run.created, run.t0
        cpu = meter.stop()
        if spy is not None:
            spy.wait()
        lat = [watch.first(k, DISPATCHED) - t for k, t in created.items()]  # type: ignore[operator]
        done = [watch.first(k, ("Succeeded",)) - t for k, t in created.items()]  # type: ignore[operator]
        offered = n / (max(created.values()) - t0)
        return {"tasks": n, "offered_per_second": round(offered, 1),
                "created_to_dispatched_ms": percentiles(lat, 50, 90, 99, 100),
                "created_to_succeeded_ms": percentiles(done, 50, 90, 99, 100),
                "create_post_ms": percentiles(CREATE_LATENCY, 50, 99),
                "operator_seen_to_dispatched_ms": histogram_quantiles(
                    scrape(env.op.metrics_url), "wallestars_operator_seen_to_dispatched_seconds", 50, 99),
                "operator_pass_seconds": pass_stats(env), "cores_busy": cpu["cores_busy"],
                **limits(a, env, a.seconds)}  # fmt: skip


def phase_expiry(a: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from wallestars_api.kubeclient import MERGE_PATCH, KubeClient

    ttl, lead = 3600, a.expiry_lead
    with environment(a) as env:
        kubeconfig = env.cluster.kubeconfig
        old = [task_body(f"x{i}", "fn", ttlSecondsAfterFinished=ttl) for i in range(a.expire_tasks)]
        asyncio.run(run_tasks(kubeconfig, NS, old))
        due = time.time() + lead
        done = datetime.fromtimestamp(due, UTC) - timedelta(seconds=ttl)

        async def expire_at_once() -> None:
            c = KubeClient.from_env(kubeconfig, connections=16)
            sem = asyncio.Semaphore(16)
            body = {"status": {"completionTime": done.strftime("%Y-%m-%dT%H:%M:%SZ")}}

            async def one(name: str) -> None:
                async with sem:
                    path = f"/apis/agents.wallestars.io/v1alpha1/namespaces/{NS}/agenttasks/{name}/status"
                    await c.request("PATCH", path, body, MERGE_PATCH)

            await asyncio.gather(*(one(b["metadata"]["name"]) for b in old))
            await c.close()

        asyncio.run(expire_at_once())
        assert time.time() < due - 10, "setting completionTime took too long; raise the lead"
        time.sleep(due - 10 - time.time())
        n = int(a.rate * a.seconds)
        run = asyncio.run(run_tasks(kubeconfig, NS, bodies("l", n), rate=a.rate))
        lat = {k: run.tasks.first(k, DISPATCHED) - t for k, t in run.created.items()}  # type: ignore[operator]
        window = [v for k, v in lat.items() if due <= run.created[k] <= due + 30]
        k = Kubectl(kubeconfig, NS)
        left = wait_remaining(k, "x", time.time() + 300)
        return {"expiring_tasks": a.expire_tasks, "offered_per_second": a.rate, "tasks": n,
                "created_to_dispatched_ms": percentiles(list(lat.values()), 50, 90, 99, 100),
                "created_in_the_30s_after_expiry_ms": percentiles(window, 50, 90, 99, 100),
                "expired_left_after_run": left[0], "all_deleted_after_s": round(left[1] - due, 1),
                **limits(a, env, a.seconds)}  # fmt: skip


def wait_remaining(k: Kubectl, prefix: str, deadline: float) -> tuple[int, float]:
    """How many tasks named ``prefix``* are still there when the run ended; then wait for
    them all to go (until ``deadline``): (left at first, when the last went)."""

    def left() -> int:
        names = k("get", "agenttasks", "-o", "name").split()
        return sum(1 for n in names if n.split("/")[-1].startswith(prefix))

    first = left()
    while left() and time.time() < deadline:
        time.sleep(1)
    return first, time.time()


def phase_memory(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as env:
        before = rss_mb(env.op.proc.pid)
        asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("m", a.memory_tasks)))
        time.sleep(3.0)  # a few more reconcile passes over everything
        return {"tasks": a.memory_tasks, "operator_before_mb": before,
                "operator_after_mb": rss_mb(env.op.proc.pid),
                "webhooks_after_mb": rss_mb(env.svc.proc.pid)}  # fmt: skip


def count_writes(cluster: localcluster.Cluster, prefix: str) -> dict[str, object]:
    """Writes per task from the audit log, by what they touched and who made them."""
    per_task: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for ev in audit_events(cluster, NS):
        ref = ev.get("objectRef") or {}
        who = writer(ev["user"]["username"])
        name = ref.get("name") or ""
        if ref.get("resource") == "agenttasks" and name.startswith(prefix):
            what = "status" if ref.get("subresource") == "status" else "object"
            if ev["verb"] == "create":
                continue  # the benchmark's own create (same admin identity as the operator)
            per_task[name][f"{who}:{ev['verb']}:{what}"] += 1
        elif ref.get("resource") == "events":
            owner = name.rsplit(".", 1)[0]
            if owner.startswith(prefix):
                per_task[owner][f"{who}:create:event"] += 1
    totals = collections.Counter[str]()
    for c in per_task.values():
        totals.update(c)
    n = len(per_task)
    # Writes to the AgentTask object itself (status or object), by the operator and the service.
    task_writes = [
        sum(v for key, v in c.items() if not key.endswith(":event")) for c in per_task.values()
    ]
    return {
        "tasks": n,
        "writes_per_task_by_kind": {key: round(v / n, 2) for key, v in sorted(totals.items())},
        "agenttask_writes_per_task_median": statistics.median(task_writes) if task_writes else None,
        "agenttask_writes_per_task_max": max(task_writes) if task_writes else None,
    }


# The status writes a task needs (bench/RESULTS.md, writes phase: 1 create + 2 status
# patches, the operator's Dispatched and the webhook service's Succeeded), as they write
# them: merge patches guarded by the resourceVersion they read.
RAW_STATUSES = (
    {"phase": "Dispatched", "attempt": 1, "message": "invoked the function", "startTime": "2026-01-01T00:00:00Z"},
    {"phase": "Succeeded", "progress": 100, "message": "done", "completionTime": "2026-01-01T00:00:01Z",
     "result": {"data": {"attempt": 1, "type": "custom"}}},
)  # fmt: skip


async def raw_writes(kubeconfig: Path, ns: str, n: int, in_flight: int) -> dict[str, float]:
    """The API server's own capacity for a task's writes, from a plain aiohttp client and
    no operator: ``n`` AgentTask creates, each followed by its status patches, with
    ``in_flight`` tasks' writes under way at once."""
    client = KubeClient.from_env(kubeconfig, connections=in_flight)
    path = TASKS.format(ns=ns)
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            obj = await client.request("POST", path, task_body(f"raw{i}", "fn"))
            for st in RAW_STATUSES:
                body = {
                    "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                    "status": st,
                }
                obj = await client.request("PATCH", f"{path}/raw{i}/status", body, MERGE_PATCH)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()
    took = time.perf_counter() - t0
    writes = n * (1 + len(RAW_STATUSES))
    return {"tasks": n, "writes": writes, "seconds": round(took, 1),
            "writes_per_second": round(writes / took, 1)}  # fmt: skip


def phase_ceiling(a: argparse.Namespace) -> dict[str, Any]:
    """Our end-to-end rate as a fraction of the machine's own ceiling, in one run on one
    control plane: first the raw writes (the operator stopped with SIGSTOP, so it neither
    sees nor competes with them; the raw tasks deleted before it goes on), then the
    throughput phase's run."""
    with environment(a) as env:
        admin = Kubectl(env.cluster.kubeconfig)
        admin("create", "namespace", "raw")
        os.kill(env.op.proc.pid, signal.SIGSTOP)
        raw_meter = CpuMeter(env.pids())
        raw_meter.start()
        try:
            raw = asyncio.run(
                raw_writes(env.cluster.kubeconfig, "raw", a.raw_tasks, a.create_in_flight)
            )
            raw_cpu = raw_meter.stop()
            admin("delete", "namespace", "raw", "--wait=true", "--timeout=300s")
        finally:
            os.kill(env.op.proc.pid, signal.SIGCONT)
        time.sleep(2.0)
        # Where the end-to-end run's time goes: CPU by process (raw: the API server and etcd).
        meter = CpuMeter(env.pids())
        meter.start()
        run = asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("t", a.tasks),
                                    create_in_flight=a.create_in_flight))  # fmt: skip
        cpu = meter.stop()
        done = max(run.tasks.first(n, ("Succeeded",)) or 0.0 for n in run.created)
        per_minute = a.tasks / (done - run.t0) * 60
        ceiling = raw["writes_per_second"] / (1 + len(RAW_STATUSES)) * 60
        return {"raw": raw, "ceiling_tasks_per_minute": round(ceiling),
                "tasks": a.tasks, "per_minute": round(per_minute),
                "create_seconds": round(max(run.created.values()) - run.t0, 1),
                "fraction_of_ceiling": round(per_minute / ceiling, 3),
                "cpu_ms_per_task": {n: round(v / a.tasks * 1000, 2) for n, v in cpu["cpu_seconds"].items()},
                "raw_cpu_ms_per_task": {n: round(v / a.raw_tasks * 1000, 2) for n, v in raw_cpu["cpu_seconds"].items()},
                "cores_busy": cpu["cores_busy"]}  # fmt: skip


def flood_user(cluster: localcluster.Cluster, pods: int) -> Path:
    """``pods`` Pending pods (their node selector matches no node) for another user to
    list, and that user: a service account allowed to list pods everywhere."""
    k = Kubectl(cluster.kubeconfig)
    k("create", "namespace", "flood")
    labels = {f"label-{i}": f"value-{i}" for i in range(10)}
    k.apply({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"p{i}", "namespace": "flood", "labels": labels},
         "spec": {"nodeSelector": {"wallestars.io/no-such-node": "true"},
                  "containers": [{"name": "c", "image": "registry.invalid/pause:1",
                                  "env": [{"name": f"E{j}", "value": "x" * 40} for j in range(10)]}]}}
        for i in range(pods)]})  # fmt: skip
    k.apply({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "flood", "namespace": "flood"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "flood"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "flood"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flood"},
         "subjects": [{"kind": "ServiceAccount", "name": "flood", "namespace": "flood"}]},
    ]})  # fmt: skip
    return token_kubeconfig(cluster, Path(tempfile.mkdtemp()) / "flood", "flood", "flood")


@contextlib.contextmanager
def flooding(kubeconfig: Path, in_flight: int, out: dict[str, Any]) -> Iterator[None]:
    """bench/flood.py running for the block; its counts go into ``out``."""
    argv = [
        sys.executable,
        str(REPO / "bench" / "flood.py"),
        str(kubeconfig),
        str(in_flight),
        "/api/v1/pods",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)  # fmt: skip
    try:
        time.sleep(3.0)  # the flood is at full strength before the tasks come
        yield
    finally:
        proc.terminate()
        out.update(json.loads(proc.communicate(timeout=30)[0] or b"{}"))


def phase_flood(a: argparse.Namespace) -> dict[str, Any]:
    """Dispatch latency (created -> Dispatched) while another user floods the API server
    with LISTs of ``--flood-pods`` pods (``--flood-in-flight`` at once): quiet, flooded,
    and flooded with the chart's API Priority and Fairness objects applied."""
    with environment(a) as env:
        cluster = env.cluster
        flooder = flood_user(cluster, a.flood_pods)
        n = int(a.rate * a.seconds)

        def dispatch_latency(prefix: str) -> dict[str, float]:
            run = asyncio.run(run_tasks(cluster.kubeconfig, NS, bodies(prefix, n), rate=a.rate))
            lat = [run.tasks.first(k, DISPATCHED) - t for k, t in run.created.items()]  # type: ignore[operator]
            return percentiles(lat, 50, 90, 99)

        res: dict[str, Any] = {"tasks_per_run": n, "rate": a.rate, "flood_pods": a.flood_pods,
                               "flood_in_flight": a.flood_in_flight}  # fmt: skip
        res["quiet_ms"] = dispatch_latency("q")
        res["flood"] = {}
        with flooding(flooder, a.flood_in_flight, res["flood"]):
            res["flooded_ms"] = dispatch_latency("f")
        helm = localcluster.bin_dirs()["helm"] / "helm"
        apf = subprocess.run(
            [str(helm), "template", "wallestars", str(REPO / "charts" / "wallestars-agents"),
             "--namespace", SYSTEM_NS, "--set", "apiPriority.enabled=true",
             "--show-only", "templates/api-priority.yaml"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        Kubectl(cluster.kubeconfig).apply(apf)
        time.sleep(2.0)  # the API server's APF configuration controller picks them up
        res["flood_apf"] = {}
        with flooding(flooder, a.flood_in_flight, res["flood_apf"]):
            res["flooded_with_apf_ms"] = dispatch_latency("p")
        if a.flood_sized_inflight:
            # The API server's concurrency sized for this machine's 2 cores instead of
            # the defaults (400 + 200 seats, sized for big control planes): APF can only
            # hold a flood back when the seats, not the CPU, run out first.
            reads, writes = a.flood_sized_inflight.split(",")
            res["sized_inflight"] = {"max_requests_inflight": int(reads),
                                     "max_mutating_requests_inflight": int(writes)}  # fmt: skip
            localcluster.restart_apiserver(cluster, kill=False, extra_args=(
                f"--max-requests-inflight={reads}", f"--max-mutating-requests-inflight={writes}"))  # fmt: skip
            time.sleep(5.0)  # the operator's watches come back
            res["quiet_sized_ms"] = dispatch_latency("r")
            res["flood_apf_sized"] = {}
            with flooding(flooder, a.flood_in_flight, res["flood_apf_sized"]):
                res["flooded_with_apf_sized_ms"] = dispatch_latency("s")
        for key in ("flooded_ms", "flooded_with_apf_ms", "flooded_with_apf_sized_ms"):
            if key not in res:
                continue
            res[key.replace("_ms", "_vs_quiet")] = {
                p: round(v / res["quiet_ms"][p], 2) for p, v in res[key].items()
            }
        return res


PHASES = {"writes": phase_writes, "throughput": phase_throughput,
          "latency": phase_latency, "memory": phase_memory, "expiry": phase_expiry,
          "ceiling": phase_ceiling, "flood": phase_flood}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="writes,throughput,latency,memory")
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--slots", type=int, default=100)
    p.add_argument("--audit-tasks", type=int, default=100)
    p.add_argument("--rate", type=float, default=50, help="latency phase: tasks offered per second")
    p.add_argument("--seconds", type=float, default=60, help="latency phase: how long")
    p.add_argument("--memory-tasks", type=int, default=10_000)
    p.add_argument(
        "--expire-tasks", type=int, default=2000, help="expiry phase: tasks expiring at once"
    )
    p.add_argument("--expiry-lead", type=float, default=60.0,
                   help="expiry phase: seconds from setting their completion time to the instant")  # fmt: skip
    p.add_argument(
        "--qps", type=float, default=50, help="the operator's client-side API rate limit"
    )
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--raw-tasks", type=int, default=3000, help="ceiling phase: raw tasks")
    p.add_argument("--create-in-flight", type=int, default=8,
                   help="ceiling phase: the benchmark's requests in flight, raw and end to end")  # fmt: skip
    p.add_argument("--flood-pods", type=int, default=1000, help="flood phase: pods listed")
    p.add_argument("--flood-in-flight", type=int, default=16,
                   help="flood phase: the other user's LISTs under way at once")  # fmt: skip
    p.add_argument("--flood-sized-inflight", default="40,20",
                   help="flood phase: then again with the API server's --max-requests-inflight,"
                   "--max-mutating-requests-inflight set so (empty: skip)")  # fmt: skip
    p.add_argument(
        "--profile", help="latency phase: py-spy the operator into this file (.svg or .txt)"
    )
    a = p.parse_args()
    for name in a.phases.split(","):
        print(json.dumps({name: PHASES[name](a)}), flush=True)


if __name__ == "__main__":
    main()
