"""Workflow and schedule benchmark: step latency, writes per step, operator memory and CPU.

    .venv/bin/python bench/workflows.py [--phases chain,fanout,schedules]

Each phase starts its own control plane, the webhook service (under its chart RBAC),
the test function (tests/agents/http_function.py: answers 202 and calls back success
at once) and the operator, then:

- chain: one workflow of ``--chain`` steps, each depending on the one before. For each
  step after the first: from its predecessor first seen Succeeded to it first seen
  Dispatched (a watch in this process), p50/p99 (the goal: p99 <= 200 ms); the
  operator's own share (dependencies ended -> step task stored, its histogram).
- fanout: one workflow with a step fanned out over ``--width`` items (no parallelism
  limit) after one first step: from the first step seen Succeeded to every item
  dispatched, and each item's first-step-end -> dispatched p50/p99; API writes per step
  by writer (audit log); the operator's memory after.
- schedules: ``--schedules`` AgentSchedules firing every minute for ``--minutes``
  minutes: fire time (task first seen) - scheduled time (its annotation), p50/p99, and
  the operator's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import REPO, Kubectl, audit_events, free_port, http_agent, scrape
from wallestars_api.kubeclient import KubeClient

from bench.load import (
    CpuMeter,
    Env,
    PhaseWatch,
    bench_environment,
    histogram_quantiles,
    percentiles,
    rss_mb,
    writer,
)

NS = "bench"
API = "/apis/agents.wallestars.io/v1alpha1/namespaces/{ns}"
TASKS = API + "/agenttasks"


def http_function(slots: int) -> Callable[[Kubectl], list[subprocess.Popen[bytes]]]:
    def setup(k: Kubectl) -> list[subprocess.Popen[bytes]]:
        port = free_port()
        fn = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "agents" / "http_function.py"), str(port)]
        )
        time.sleep(1.0)
        http_agent(k, f"http://127.0.0.1:{port}/", slots=slots)
        return [fn]

    return setup


@contextlib.contextmanager
def environment(a: argparse.Namespace, audit: bool = False) -> Iterator[Env]:
    with bench_environment(
        "bench-workflows", NS, http_function(a.slots), a.qps, a.burst, audit
    ) as env:
        yield env


STEP = {"agentRef": "fn", "type": "custom", "retries": {"limit": 0},
        "payload": {"data": {"behaviour": "succeed"}}}  # fmt: skip


async def run_workflow(kubeconfig: Path, wf: dict[str, Any], done: Callable[[PhaseWatch], bool],
                       limit: float = 1800) -> PhaseWatch:  # fmt: skip
    """Create the workflow and watch its step tasks until ``done``."""
    client = KubeClient.from_env(kubeconfig, connections=8)
    watch = PhaseWatch()
    watcher = asyncio.create_task(watch.run(client, NS))
    try:
        await asyncio.sleep(0.5)
        await client.request("POST", (API + "/agentworkflows").format(ns=NS), wf)
        t0 = time.monotonic()
        while not done(watch):
            if time.monotonic() - t0 > limit:
                raise TimeoutError("the workflow did not finish")
            await asyncio.sleep(0.2)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.close()
    return watch


def by_step(watch: PhaseWatch) -> dict[str, str]:
    """step name (with item index) -> task name, from the watched objects' labels."""
    out = {}
    for name, obj in watch.objects.items():
        labels = obj["metadata"].get("labels") or {}
        step = labels.get("agents.wallestars.io/step", "")
        item = labels.get("agents.wallestars.io/item")
        out[step if item is None else f"{step}/{item}"] = name
    return out


DISPATCHED = ("Dispatched", "Running", "Succeeded")


def phase_chain(a: argparse.Namespace) -> dict[str, Any]:
    steps = [{"name": "s0", "template": STEP}]
    steps += [
        {"name": f"s{i}", "dependsOn": [f"s{i - 1}"], "template": STEP} for i in range(1, a.chain)
    ]
    wf = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow",
          "metadata": {"name": "chain"}, "spec": {"steps": steps}}  # fmt: skip
    with environment(a) as env:
        meter = CpuMeter(env.pids())
        meter.start()
        t0 = time.time()
        watch = asyncio.run(run_workflow(env.cluster.kubeconfig, wf,
                                         lambda w: w.count("Succeeded") >= a.chain))  # fmt: skip
        elapsed = time.time() - t0
        cpu = meter.stop()
        names = by_step(watch)
        gaps = []
        for i in range(1, a.chain):
            end = watch.first(names[f"s{i - 1}"], ("Succeeded",))
            start = watch.first(names[f"s{i}"], DISPATCHED)
            if end is not None and start is not None:
                gaps.append(start - end)
        metrics = scrape(env.op.metrics_url)
        return {"steps": a.chain, "seconds": round(elapsed, 1),
                "step_end_to_next_dispatched_ms": percentiles(gaps, 50, 90, 99, 100),
                "operator_dependencies_ended_to_step_created_ms": histogram_quantiles(
                    metrics, "wallestars_workflow_step_start_delay_seconds", 50, 99),
                "cores_busy": cpu["cores_busy"], "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


def phase_fanout(a: argparse.Namespace) -> dict[str, Any]:
    steps = [{"name": "first", "template": STEP},
             {"name": "each", "dependsOn": ["first"], "withItems": list(range(a.width)), "template": STEP}]  # fmt: skip
    wf = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow",
          "metadata": {"name": "fan"}, "spec": {"steps": steps}}  # fmt: skip
    with environment(a, audit=True) as env:
        watch = asyncio.run(run_workflow(env.cluster.kubeconfig, wf,
                                         lambda w: w.count("Succeeded") >= a.width + 1))  # fmt: skip
        names = by_step(watch)
        end = watch.first(names["first"], ("Succeeded",)) or 0.0
        starts = [watch.first(names[f"each/{i}"], DISPATCHED) for i in range(a.width)]
        gaps = [s - end for s in starts if s is not None]
        time.sleep(2.0)  # Events go out after the transitions
        writes: collections.Counter[str] = collections.Counter()
        for ev in audit_events(env.cluster, NS):
            if ev["verb"] in ("create", "update", "patch", "delete"):
                ref = ev.get("objectRef") or {}
                what = ref.get("resource", "") + (
                    "/" + ref["subresource"] if ref.get("subresource") else ""
                )
                writes[f"{writer(ev['user'].get('username', ''))} {what}"] += 1
        per_step = {k: round(v / (a.width + 1), 2) for k, v in sorted(writes.items()) if v > 2}
        return {"width": a.width, "all_items_dispatched_after_first_step_s": round(max(gaps), 2),
                "first_step_end_to_item_dispatched_ms": percentiles(gaps, 50, 99),
                "writes_per_step_by_writer": per_step,
                "writes_per_step": round(sum(writes.values()) / (a.width + 1), 2),
                "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


def phase_schedules(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as env:
        k = Kubectl(env.cluster.kubeconfig, NS)
        items = [{"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentSchedule",
                  "metadata": {"name": f"m{i}"},
                  "spec": {"schedule": "* * * * *", "successfulHistoryLimit": 1,
                           "taskTemplate": {"spec": STEP}}} for i in range(a.schedules)]  # fmt: skip
        for chunk in range(0, len(items), 200):
            k.run("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items[chunk:chunk + 200]}))  # fmt: skip
        client_watch = PhaseWatch()

        async def watch_for(seconds: float) -> None:
            client = KubeClient.from_env(env.cluster.kubeconfig, connections=4)
            task = asyncio.create_task(client_watch.run(client, NS))
            await asyncio.sleep(seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

        meter = CpuMeter(env.pids())
        meter.start()
        asyncio.run(watch_for(a.minutes * 60 + 5))
        cpu = meter.stop()
        late = []
        for name, obj in client_watch.objects.items():
            at = (obj["metadata"].get("annotations") or {}).get(
                "agents.wallestars.io/scheduled-time"
            )
            seen = client_watch.first(name, ("Pending", "Queued", *DISPATCHED))
            if at and seen:
                late.append(seen - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
        return {"schedules": a.schedules, "minutes": a.minutes, "runs_seen": len(late),
                "fire_time_minus_scheduled_ms": percentiles(late, 50, 90, 99, 100),
                "operator_cpu_seconds": cpu["cpu_seconds"].get("operator"),
                "cores_busy": cpu["cores_busy"], "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="chain,fanout,schedules")
    p.add_argument("--chain", type=int, default=100)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--schedules", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=3)
    p.add_argument("--slots", type=int, default=200)
    p.add_argument("--qps", type=float, default=50)
    p.add_argument("--burst", type=int, default=100)
    a = p.parse_args()
    phases = {"chain": phase_chain, "fanout": phase_fanout, "schedules": phase_schedules}
    for name in a.phases.split(","):
        print(json.dumps({name: phases[name](a)}), flush=True)


if __name__ == "__main__":
    main()
