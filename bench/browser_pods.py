"""Pod start of real browser attempts on the real node: Chromium in the browser image.

    .venv/bin/python bench/browser_pods.py [--phases coldwarm,latency,throughput]
        [--latency-tasks 100] [--latency-rate 0.5] [--tasks 100] [--slots 20]

Every task is a full-page screenshot of the fixture site's home page, served on the
node's address; the Agent is the chart's default (the browser image's own entry point,
no command), confined as in production. Times are taken on one clock (the machine's):

- Job created (the benchmark's watch) -> agent process started (the agent reports when
  its process started, ``metrics.processStartedAt``) -> first callback (the task seen
  Running: the agent's progress callback once Chromium is up) -> Succeeded.
- coldwarm: the first task on a node just started, with the page cache dropped (the
  image's files read from disk, as on a node that has not run it yet), then tasks one
  at a time on the warm node.
- latency: ``--latency-tasks`` at ``--latency-rate`` per second, so none waits for a slot
  or for the CPU (at 0.5/s, on 2 cores, they do).
- throughput: ``--tasks`` at once with ``--slots`` concurrent pods; Jobs per minute and
  CPU per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Kubectl, free_port, start_fixture_site, wait_for
from realnode import images, node
from realnode.config import NODE_IP

from bench.load import CpuMeter, Env, Run, bench_environment, percentiles, rss_mb, run_tasks

NS = "bench"
TASK_LABEL = "agents.wallestars.io/task"


@contextlib.contextmanager
def environment(a: argparse.Namespace) -> Iterator[tuple[Env, str]]:
    port = free_port()
    site = start_fixture_site(port, NODE_IP)
    url = f"http://{NODE_IP}:{port}/"

    def agent(k: Kubectl) -> list[subprocess.Popen[bytes]]:
        tag = images.ensure(node.layout_of(k.kubeconfig.parent), ["browser-agent"])
        k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent",
                 "metadata": {"name": "br"},
                 "spec": {"type": "browser", "capabilities": ["screenshot"], "concurrency": a.slots,
                          "browser": {"image": tag["browser-agent"], "imagePullPolicy": "Never",
                                      "network": {"allowPrivateAddresses": [f"{NODE_IP}:{port}"]}}}})  # fmt: skip
        return []

    try:
        with bench_environment("bench-browser-pods", NS, agent, 50, 100, real_node=True) as env:
            wait_for("the site", lambda: subprocess.run(["curl", "-fs", url], capture_output=True,
                                                        check=False).returncode == 0)  # fmt: skip
            yield env, url
    finally:
        site.terminate()


def bodies(prefix: str, n: int, url: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": f"{prefix}{i}"},
             "spec": {"agentRef": "br", "type": "screenshot", "timeoutSeconds": 600,
                      "payload": {"url": url, "fullPage": True}}} for i in range(n)]  # fmt: skip


def splits(run: Run) -> list[dict[str, float]]:
    """Per task, ms from its Job's creation: to the agent's process start, to its first
    callback, to Succeeded; and the agent's own Chromium launch and page times."""
    job_seen = {(o["metadata"].get("labels") or {}).get(TASK_LABEL, ""): run.jobs.first(n, ("Pending",))
                for n, o in run.jobs.objects.items()}  # fmt: skip
    out = []
    for name in run.created:
        metrics = ((run.tasks.objects[name].get("status") or {}).get("result") or {}).get(
            "metrics"
        ) or {}
        job, running = job_seen.get(name), run.tasks.first(name, ("Running",))
        done = run.tasks.first(name, ("Succeeded",))
        if job is None or running is None or done is None or "processStartedAt" not in metrics:
            continue
        out.append({"agent_started": (metrics["processStartedAt"] - job) * 1000,
                    "first_callback": (running - job) * 1000,
                    "succeeded": (done - job) * 1000,
                    "launch": metrics.get("launchMs", 0.0), "page": metrics.get("pageMs", 0.0)})  # fmt: skip
    return out


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {f"job_to_{k}_ms": percentiles([r[k] / 1000 for r in rows], 50, 99)
            for k in ("agent_started", "first_callback", "succeeded")} | {
        "chromium_launch_ms_p50": round(statistics.median(r["launch"] for r in rows)),
        "page_ms_p50": round(statistics.median(r["page"] for r in rows))}  # fmt: skip


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def phase_coldwarm(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as (env, url):
        drop_page_cache()
        cold = splits(asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("cold", 1, url),
                                            watch_jobs=True)))  # fmt: skip
        warm: list[dict[str, float]] = []
        for i in range(a.warm_tasks):
            warm += splits(asyncio.run(run_tasks(env.cluster.kubeconfig, NS,
                                                 bodies(f"warm{i}-", 1, url), watch_jobs=True)))  # fmt: skip
        warm_median = {k: statistics.median(w[k] for w in warm) for k in warm[0]}
        return {"cold_page_cache_dropped": rounded(cold[0]), "warm_median": rounded(warm_median),
                "warm_tasks": len(warm)}  # fmt: skip


def rounded(d: dict[str, float]) -> dict[str, int]:
    return {k: round(v) for k, v in d.items()}


def phase_latency(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as (env, url):
        run = asyncio.run(run_tasks(env.cluster.kubeconfig, NS,
                                    bodies("l", a.latency_tasks, url), rate=a.latency_rate, watch_jobs=True))  # fmt: skip
        rows = splits(run)
        return {"tasks": a.latency_tasks, "offered_per_second": a.latency_rate,
                "measured": len(rows), **summary(rows)}  # fmt: skip


def phase_throughput(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a) as (env, url):
        meter = CpuMeter(env.pids())
        meter.start()
        t0 = time.time()
        run = asyncio.run(
            run_tasks(env.cluster.kubeconfig, NS, bodies("t", a.tasks, url), watch_jobs=True)
        )
        cpu = meter.stop()
        last = max(run.tasks.first(n, ("Succeeded",)) or 0.0 for n in run.created)
        rows = splits(run)
        return {"tasks": a.tasks, "slots": a.slots, "seconds": round(last - t0, 1),
                "per_minute": round(a.tasks / (last - t0) * 60), **summary(rows), **cpu,
                "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


PHASES = {"coldwarm": phase_coldwarm, "latency": phase_latency, "throughput": phase_throughput}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="coldwarm,latency,throughput")
    p.add_argument("--warm-tasks", type=int, default=5)
    p.add_argument("--latency-tasks", type=int, default=100)
    # One every 5 s: a real Chromium attempt costs this 2-core machine ~2.5 s of wall time
    # alone, and at 0.5/s they pile up (Chromium's launch took 17 s at the p50).
    p.add_argument("--latency-rate", type=float, default=0.2)
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--slots", type=int, default=20)
    a = p.parse_args()
    for name in a.phases.split(","):
        print(json.dumps({name: PHASES[name](a)}), flush=True)


if __name__ == "__main__":
    main()
