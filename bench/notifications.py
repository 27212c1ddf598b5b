"""Notification benchmark: delivery latency and the writes notifications add per task.

    .venv/bin/python bench/notifications.py [--rate 100] [--seconds 30]

A control plane with the audit log, the webhook service and the operator (allowed to
notify a receiver on loopback, through its smokescreen); the receiver answers each
POST after 50 ms. ``rate`` AgentTasks a second with `spec.notify` (phases: Succeeded)
are created and at once set Succeeded, as the webhook service would on a final callback
(tasks that run in well under a second), for ``seconds``. Per task: from that status write being stored (its PATCH answered) to the
notification's first arrival, p50/p99/max; the operator's writes to each task after
that point (the notification records, waited for; from the audit log) and how long
after the last delivery the last record was written; repeats (the same webhook-id
twice); the operator's CPU and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web
from harness import Kubectl, audit_events, credential_secret, free_port
from wallestars_api.kubeclient import MERGE_PATCH, KubeClient

from bench.load import CpuMeter, bench_environment, percentiles, rss_mb

NS = "bench"
TASKS = f"/apis/agents.wallestars.io/v1alpha1/namespaces/{NS}/agenttasks"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Receiver:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.first: dict[str, float] = {}  # webhook-id -> first arrival (epoch seconds)
        self.names: dict[str, str] = {}  # webhook-id -> task name
        self.repeats = 0

    async def hook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = json.loads(await request.read())
        wid = request.headers["webhook-id"]
        if wid in self.first:
            self.repeats += 1
        else:
            self.first[wid] = arrived
            self.names[wid] = body["data"]["name"]
        await asyncio.sleep(self.delay)
        return web.Response(status=204)


async def run(a: argparse.Namespace, kubeconfig: Path, url: str, rec: Receiver) -> dict[str, float]:
    """Create and finish tasks at the rate; name -> when its final status was stored."""
    client = KubeClient.from_env(kubeconfig, connections=16)
    n = int(a.rate * a.seconds)
    names = [f"n{i:05d}" for i in range(n)]
    notify = (
        [] if a.control else [{"url": url, "secretRef": {"name": "hook"}, "phases": ["Succeeded"]}]
    )
    sem = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with sem:
            await client.request("POST", TASKS, {
                "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": name},
                "spec": {"agentRef": "nobody", "type": "custom", "payload": {}, "notify": notify}})  # fmt: skip

    stored: dict[str, float] = {}

    async def finish(name: str) -> None:
        # Created, then finished at once, as a task that runs in well under a second: the
        # operator holds about rate x 1 s tasks at a time, as in a steady state.
        await create(name)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await client.request("PATCH", f"{TASKS}/{name}/status",
                             {"status": {"phase": "Succeeded", "reason": "Succeeded",
                                         "completionTime": now, "result": {"data": {"n": name}}}},
                             MERGE_PATCH)  # fmt: skip
        stored[name] = time.time()

    start = time.monotonic()
    pending: list[asyncio.Task[None]] = []
    for i, name in enumerate(names):
        due = start + i / a.rate
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        pending.append(asyncio.create_task(finish(name)))
    await asyncio.gather(*pending)
    print(f"finished {n} tasks in {time.monotonic() - start:.1f} s", flush=True)
    for _ in range(600):  # up to 5 minutes for the rest to arrive
        if len(rec.first) >= n or a.control:
            break
        await asyncio.sleep(0.5)
    # The records (status.notifications) may lag the deliveries: the operator gives their
    # writes a share of its API budget. Wait for every one, to count them all.
    t0 = time.monotonic()
    for _ in range(900):
        recorded = 0
        cont = ""
        while True:
            page = await client.request(
                "GET", TASKS, params={"limit": "500", **({"continue": cont} if cont else {})}
            )
            recorded += sum(1 for t in page["items"]
                            if any(r.get("deliveredTime") for r in (t.get("status") or {}).get("notifications") or []))  # fmt: skip
            if not (cont := page["metadata"].get("continue", "")):
                break
        if recorded >= n or a.control:
            break
        await asyncio.sleep(1.0)
    if a.control:  # as long as a run with notifications waits for its records
        await asyncio.sleep(a.settle)
    a.records_lag = round(time.monotonic() - t0, 1)
    await client.close()
    return stored


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=float, default=100.0, help="tasks finished per second")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--delay", type=float, default=0.05, help="the receiver's answer time")
    p.add_argument("--qps", type=float, default=50.0, help="the operator's apiQPS")
    p.add_argument(
        "--control",
        action="store_true",
        help="the same tasks without spec.notify: the operator's writes without notifications",
    )
    p.add_argument(
        "--settle", type=float, default=90.0, help="with --control: seconds to wait before counting"
    )
    a = p.parse_args()
    rec = Receiver(a.delay)
    port = free_port()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", rec.hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    async def bench() -> dict[str, Any]:
        runner = await serve()
        env_ = {"WALLESTARS_NOTIFY_ALLOW_PRIVATE_ADDRESSES": f"127.0.0.1:{port}"}
        try:
            with bench_environment("bench-notify", NS, lambda k: [], a.qps, int(a.qps * 2),
                                   audit=True, operator_env=env_) as env:  # fmt: skip
                credential_secret(Kubectl(env.cluster.kubeconfig, NS), "hook", secret=SECRET)
                cpu = CpuMeter({"operator": env.op.proc.pid})
                cpu.start()
                stored = await run(a, env.cluster.kubeconfig, f"http://127.0.0.1:{port}/hook", rec)
                used = cpu.stop()
                mem = rss_mb(env.op.proc.pid)
                after: collections.Counter[str] = collections.Counter()
                for ev in audit_events(env.cluster, NS):
                    ref = ev.get("objectRef") or {}
                    name = ref.get("name", "")
                    if ev.get("verb") not in ("patch", "update") or name not in stored:
                        continue
                    when = datetime.fromisoformat(
                        ev["requestReceivedTimestamp"].replace("Z", "+00:00")
                    )
                    # The operator runs as its ServiceAccount (harness.start_operator).
                    user = ev["user"].get("username", "")
                    if "wallestars-operator" in user and when.timestamp() >= stored[name] - 0.001:
                        after[name] += 1
        finally:
            await runner.cleanup()
        by_task = {
            rec.names[w]: rec.first[w] - stored[rec.names[w]]
            for w in rec.first
            if rec.names[w] in stored
        }
        lat = list(by_task.values())
        slowest = sorted(by_task.items(), key=lambda x: -x[1])[:5]
        n = len(stored)
        return {
            "tasks": n, "rate": a.rate, "receiver_delay_ms": a.delay * 1000,
            "delivered": len(rec.first), "repeats": rec.repeats,
            "latency_ms": {**percentiles(lat, 50, 99), "max": round(max(lat, default=0) * 1000, 1)},
            "operator_writes_per_task_after_finish": round(sum(after.values()) / max(n, 1), 2),
            "records_all_written_s_after_last_delivery": a.records_lag,
            "operator_cpu": used, "operator_memory_mb": mem,
            "slowest_ms": {name: round(x * 1000) for name, x in slowest},
        }  # fmt: skip

    print(json.dumps(asyncio.run(bench()), indent=2))


if __name__ == "__main__":
    main()
