"""Operator benchmark for `http` cloud agents: API writes per task and throughput.

    .venv/bin/python bench/operator_http.py [--tasks 1000] [--slots 100] [--audit-tasks 100]

Starts its own control plane, the webhook service (under its chart RBAC), the test
function (tests/agents/http_function.py: answers 202 and calls back success at once)
and the operator. Two phases:

1. Writes per task, exactly: ``--audit-tasks`` tasks with the API server's audit log on;
   every write is attributed to the object it touched (the task itself, its status,
   Events about it, anything else).
2. Throughput: ``--tasks`` tasks created at once (kubectl apply of Lists), agent
   concurrency ``--slots``; from the first creation to the last Succeeded.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

import localcluster
from harness import (
    REPO,
    Kubectl,
    free_port,
    http_agent,
    install_chart_rbac,
    start_operator,
    start_service,
    wait_for,
)


def create_tasks(k: Kubectl, prefix: str, n: int) -> None:
    """Create the tasks from 4 kubectl processes at once (plain create: one POST each)."""
    from concurrent.futures import ThreadPoolExecutor

    def chunk(start: int) -> None:
        items = [
            {
                "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": f"{prefix}{i}"},
                "spec": {"agentRef": "fn", "type": "custom", "payload": {"data": {"behaviour": "succeed"}}},
            }
            for i in range(start, min(n, start + 250))
        ]  # fmt: skip
        k(
            "create",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(chunk, range(0, n, 250)))


def succeeded(k: Kubectl, prefix: str) -> int:
    out = k(
        "get",
        "agenttasks",
        "-o",
        'jsonpath={range .items[*]}{.metadata.name} {.status.phase}{"\\n"}{end}',
    )
    return sum(
        1 for line in out.splitlines() if line.startswith(prefix) and line.endswith(" Succeeded")
    )


def run(a: argparse.Namespace, audit: bool, n: int, prefix: str) -> dict[str, object]:
    state = REPO / ".cluster" / "bench-operator"
    cluster = localcluster.up(state, ports=localcluster.Ports.free(), audit=audit)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        k0 = Kubectl(cluster.kubeconfig)
        k0("apply", "--server-side", "-f", str(REPO / "crds"))
        k0("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        install_chart_rbac(cluster)
        k0("create", "namespace", "bench")
        k = Kubectl(cluster.kubeconfig, "bench")
        masters = [os.urandom(32)]
        svc = start_service(cluster, Path(tempfile.mkdtemp()), masters)
        port = free_port()
        fn = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "agents" / "http_function.py"), str(port)]
        )
        procs.append(fn)
        time.sleep(1.0)
        http_agent(k, f"http://127.0.0.1:{port}/", name="fn", slots=a.slots)
        op = start_operator(cluster, Path(tempfile.mkdtemp()), masters, svc.url,
                            WALLESTARS_API_QPS=str(a.qps), WALLESTARS_API_BURST=str(a.burst))  # fmt: skip
        try:
            t0 = time.monotonic()
            create_tasks(k, prefix, n)
            created = time.monotonic() - t0
            wait_for(
                "all tasks to succeed",
                lambda: succeeded(k, prefix) == n,
                timeout=3600,
                interval=1.0,
            )
            elapsed = time.monotonic() - t0
        finally:
            last_metrics[0] = fetch(op.metrics_url)
            op.stop()
            svc.stop()
        rl_wait = metric(op.metrics_url, "wallestars_operator_rate_limit_wait_seconds")
        calls = metric(op.metrics_url, "wallestars_operator_api_requests")
        result: dict[str, object] = {"tasks": n, "seconds": round(elapsed, 1), "per_minute": round(n / elapsed * 60),
                                     "create_seconds": round(created, 1), "operator_api_calls": calls,
                                     "operator_calls_per_second": round(calls / elapsed, 1),
                                     "rate_limit_wait_seconds": rl_wait, "qps_limit": a.qps}  # fmt: skip
        if audit:
            result.update(count_writes(cluster, prefix))
        return result
    finally:
        for p in procs:
            p.terminate()
        localcluster.down(state)


last_metrics = [""]


def fetch(url: str) -> str:
    import urllib.request

    try:
        return str(urllib.request.urlopen(url, timeout=5).read().decode())  # noqa: S310 (loopback)
    except OSError:
        return ""


def metric(_url: str, name: str) -> float:
    for line in last_metrics[0].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def count_writes(cluster: localcluster.Cluster, prefix: str) -> dict[str, object]:
    """Writes per task from the audit log, by what they touched and who made them."""
    per_task: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in (cluster.logs / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        ref = ev.get("objectRef") or {}
        if ev.get("stage") != "ResponseComplete" or ref.get("namespace") != "bench":
            continue
        user = ev["user"]["username"]
        who = (
            "operator"
            if user == "wallestars-admin"
            else ("webhooks" if "wallestars-webhooks" in user else user)
        )
        name = ref.get("name") or ""
        if ref.get("resource") == "agenttasks" and name.startswith(prefix):
            what = "status" if ref.get("subresource") == "status" else "object"
            if ev["verb"] == "create" and who == "operator":
                continue
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
        "writes_per_task_by_kind": {key: round(v / n, 2) for key, v in sorted(totals.items())},
        "agenttask_writes_per_task_median": statistics.median(task_writes) if task_writes else None,
        "agenttask_writes_per_task_max": max(task_writes) if task_writes else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--slots", type=int, default=100)
    p.add_argument("--audit-tasks", type=int, default=100)
    p.add_argument(
        "--qps", type=float, default=50, help="the operator's client-side API rate limit"
    )
    p.add_argument("--burst", type=int, default=100)
    a = p.parse_args()
    print(json.dumps({"writes": run(a, audit=True, n=a.audit_tasks, prefix="w")}))
    print(json.dumps({"throughput": run(a, audit=False, n=a.tasks, prefix="t")}))


if __name__ == "__main__":
    main()
