"""What the operator benchmarks share: creating AgentTasks fast, watching their phases,
and reading each process's CPU time and memory from /proc."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wallestars_api.kubeclient import KubeClient

TASKS = "/apis/agents.wallestars.io/v1alpha1/namespaces/{ns}/agenttasks"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def task_body(name: str, agent: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
        "spec": {"agentRef": agent, "type": "custom", "payload": {"data": {"behaviour": "succeed"}}, **spec},
    }  # fmt: skip


async def create_tasks(
    client: KubeClient,
    ns: str,
    bodies: Iterable[dict[str, Any]],
    rate: float | None = None,
    concurrency: int = 8,
) -> dict[str, float]:
    """POST every body; returns name -> monotonic time its 201 arrived.

    ``rate`` set: open loop, body i is sent at start + i/rate whatever earlier ones do.
    Unset: as fast as ``concurrency`` requests in flight allow.
    """
    created: dict[str, float] = {}
    took: list[float] = []
    path = TASKS.format(ns=ns)
    sem = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(i: int, body: dict[str, Any]) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent = time.monotonic()
            await client.request("POST", path, body)
        else:
            async with sem:
                sent = time.monotonic()
                await client.request("POST", path, body)
        created[body["metadata"]["name"]] = now = time.monotonic()
        took.append(now - sent)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    CREATE_LATENCY[:] = took
    return created


# Latency of the last create_tasks call's POSTs (seconds): how loaded the API server was.
CREATE_LATENCY: list[float] = []


@dataclass
class PhaseWatch:
    """First moment (monotonic, this process) each task was seen in each phase."""

    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    rv: str = "0"

    def first(self, name: str, phases: Iterable[str]) -> float | None:
        times = [t for p, t in self.seen.get(name, {}).items() if p in phases]
        return min(times) if times else None

    def count(self, phase: str) -> int:
        return sum(1 for s in self.seen.values() if phase in s)

    async def run(self, client: KubeClient, ns: str) -> None:
        while True:  # the API server ends a watch after its timeout; resume from the last rv
            params = {"resourceVersion": self.rv, "allowWatchBookmarks": "true"}
            async for ev in client.watch(TASKS.format(ns=ns), params):
                now = time.monotonic()
                obj = ev.get("object") or {}
                self.rv = (obj.get("metadata") or {}).get("resourceVersion", self.rv)
                if ev.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                phase = (obj.get("status") or {}).get("phase") or "Pending"
                self.seen.setdefault(obj["metadata"]["name"], {}).setdefault(phase, now)


def percentiles(xs: list[float], *ps: float) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)
    return {f"p{p:g}": round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1) for p in ps}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmHWM), MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


class CpuMeter:
    """CPU seconds each named process used between start() and stop()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.before: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.before = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        used = {n: round(cpu_seconds(p) - self.before[n], 1) for n, p in self.pids.items()}
        return {
            "wall_seconds": round(wall, 1),
            "cpu_seconds": used,
            "cores_busy": {n: round(v / wall, 2) for n, v in used.items()},
        }


def histogram_quantiles(metrics_text: str, name: str, *qs: float) -> dict[str, float]:
    """Quantiles (ms) of a Prometheus histogram, interpolated within buckets as
    histogram_quantile() does; an upper bound at bucket resolution, not an exact figure."""
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.split()[-1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return {}
    total = buckets[-1][1]
    out: dict[str, float] = {}
    for q in qs:
        rank = q / 100 * total
        lo_le, lo_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    out[f"p{q:g}"] = float("inf")
                else:
                    frac = (rank - lo_n) / (n - lo_n) if n > lo_n else 1.0
                    out[f"p{q:g}"] = round((lo_le + (le - lo_le) * frac) * 1000, 1)
                break
            lo_le, lo_n = le, n
    return out
