"""Operator benchmark for browser agents: one Job per attempt through the node stand-in.

    .venv/bin/python bench/operator_jobs.py [--tasks 300] [--slots 20] [--audit-tasks 40] [--real-node]

The agent does no browser work (bench/agents/noop_agent.sh: says when it started and
when it sent its final callback, signed with openssl and sent with curl; ``--agent
python`` uses noop_agent.py and the SDK instead), so what is measured is the operator,
the Job and pod machinery, the stand-in and the webhook service.

- writes: ``--audit-tasks`` tasks with the API server's audit log on; every write in the
  namespace per task, by who made it and what it touched (Job, pod, Secret, Events...).
- latency/throughput: agent concurrency ``--slots``; p50/p99 of
  created -> Job created (watches in this process), Job created -> agent process started
  (the agent's own clock), final callback sent -> task Succeeded (seen by the watch);
  throughput from the first create to the last Succeeded; CPU per process.
- latency: the same split at a light load (``--latency-rate`` tasks/s), so no task waits
  for a slot; throughput: ``--tasks`` at once, most of them queued.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import REPO, Kubectl, audit_events, browser_agent
from realnode import images, node

from bench.load import (
    CpuMeter,
    Env,
    bench_environment,
    percentiles,
    rss_mb,
    run_tasks,
    task_body,
    writer,
)

NS = "bench"
TASK_LABEL = "agents.wallestars.io/task"


def noop_agent(a: argparse.Namespace) -> Any:
    script = REPO / "bench" / "agents" / "noop_agent.py"
    if a.real_node:
        # In a container of the browser image (it has Python and the SDK); the script
        # itself is the command's argument, as no file of this checkout is in the image.
        command = ["python", "-c", script.read_text()]
    elif a.agent == "sh":
        command = ["/bin/sh", str(REPO / "bench" / "agents" / "noop_agent.sh")]
    else:
        command = [sys.executable, str(script)]

    def setup(k: Kubectl) -> list[subprocess.Popen[bytes]]:
        image = {}
        if a.real_node:
            tag = images.ensure(node.layout_of(k.kubeconfig.parent), ["browser-agent"])
            image = {"image": tag["browser-agent"], "imagePullPolicy": "Never"}
        browser_agent(k, command, name="br", slots=a.slots, **image)
        return []

    return setup


@contextlib.contextmanager
def environment(a: argparse.Namespace, audit: bool = False) -> Iterator[Env]:
    name = "bench-jobs-real" if a.real_node else "bench-jobs"
    with bench_environment(name, NS, noop_agent(a), a.qps, a.burst, audit, a.real_node) as env:
        yield env


def bodies(prefix: str, n: int) -> list[dict[str, Any]]:
    return [task_body(f"{prefix}{i}", "br", timeoutSeconds=600) for i in range(n)]


def measure(a: argparse.Namespace, n: int, rate: float | None) -> dict[str, Any]:
    with environment(a) as env:
        meter = CpuMeter(env.pids())
        meter.start()
        run = asyncio.run(
            run_tasks(env.cluster.kubeconfig, NS, bodies("j", n), rate=rate, watch_jobs=True)
        )
        cpu = meter.stop()
        job_seen = {
            (o["metadata"].get("labels") or {}).get(TASK_LABEL, ""): run.jobs.first(n, ("Pending",))
            for n, o in run.jobs.objects.items()
        }  # fmt: skip
        to_job, to_start, to_callback, to_terminal = [], [], [], []
        for name, created in run.created.items():
            data = ((run.tasks.objects[name].get("status") or {}).get("result") or {}).get(
                "data"
            ) or {}
            job = job_seen.get(name)
            done = run.tasks.first(name, ("Succeeded",))
            if job is None or done is None or "startedAt" not in data:
                continue
            to_job.append(job - created)
            to_start.append(float(data["startedAt"]) - job)
            to_callback.append(float(data["callbackSentAt"]) - job)
            to_terminal.append(done - float(data["callbackSentAt"]))
        last = max(run.tasks.first(n, ("Succeeded",)) or 0.0 for n in run.created)
        elapsed = last - run.t0
        agent = "python, in the browser image" if a.real_node else a.agent
        return {"tasks": n, "slots": a.slots, "agent": agent, "offered_per_second": rate,
                "measured": len(to_job), "seconds": round(elapsed, 1),
                "per_minute": round(n / elapsed * 60),
                "created_to_job_ms": percentiles(to_job, 50, 99),
                "job_to_agent_started_ms": percentiles(to_start, 50, 99),
                "job_to_first_callback_ms": percentiles(to_callback, 50, 99),
                "node": "real" if a.real_node else "stand-in",
                "callback_to_succeeded_ms": percentiles(to_terminal, 50, 99),
                "operator_api_calls_per_task": round(env.op.metric("wallestars_operator_api_requests") / n, 2),
                **cpu, "operator_memory_mb": rss_mb(env.op.proc.pid)}  # fmt: skip


def phase_latency(a: argparse.Namespace) -> dict[str, Any]:
    """Latencies with the agent's slots never all busy: nothing waits in the queue."""
    return measure(a, a.latency_tasks, a.latency_rate)


def phase_throughput(a: argparse.Namespace) -> dict[str, Any]:
    return measure(a, a.tasks, None)


def phase_writes(a: argparse.Namespace) -> dict[str, Any]:
    with environment(a, audit=True) as env:
        run = asyncio.run(run_tasks(env.cluster.kubeconfig, NS, bodies("w", a.audit_tasks)))
        time.sleep(3.0)  # Events and the Jobs' last status writes
        return count_writes(env, len(run.created))


def count_writes(env: Env, n: int) -> dict[str, Any]:
    """Every write in the namespace per task, by writer and resource (audit log)."""
    totals: collections.Counter[str] = collections.Counter()
    for ev in audit_events(env.cluster, NS):
        ref = ev.get("objectRef") or {}
        res = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
        if res == "agenttasks" and ev["verb"] == "create":
            continue  # the benchmark's own creates
        totals[f"{writer(ev['user']['username'])}:{ev['verb']}:{res}"] += 1
    per = {k: round(v / n, 2) for k, v in sorted(totals.items())}
    by_res: collections.Counter[str] = collections.Counter()
    for k, v in totals.items():
        by_res[k.split(":")[-1].split("/")[0]] += v
    return {"tasks": n, "writes_per_task": per,
            "writes_per_task_by_resource": {k: round(v / n, 2) for k, v in sorted(by_res.items())},
            "writes_per_task_total": round(sum(totals.values()) / n, 2)}  # fmt: skip


PHASES = {"writes": phase_writes, "latency": phase_latency, "throughput": phase_throughput}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="writes,latency,throughput")
    p.add_argument(
        "--agent",
        choices=["sh", "python"],
        default="sh",
        help="sh: a signed callback with openssl+curl; python: the SDK",
    )
    p.add_argument("--latency-tasks", type=int, default=60)
    p.add_argument("--latency-rate", type=float, default=2.0)
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--slots", type=int, default=20)
    p.add_argument("--audit-tasks", type=int, default=40)
    p.add_argument(
        "--qps", type=float, default=50, help="the operator's client-side API rate limit"
    )
    p.add_argument("--burst", type=int, default=100)
    p.add_argument(
        "--real-node", action="store_true",
        help="run the Jobs on the real node, the agent (python, the SDK) in the browser image",
    )  # fmt: skip
    a = p.parse_args()
    for name in a.phases.split(","):
        print(json.dumps({name: PHASES[name](a)}), flush=True)


if __name__ == "__main__":
    main()
