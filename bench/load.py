"""What the operator benchmarks share: creating AgentTasks fast, watching their phases,
and reading each process's CPU time and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import localcluster
from harness import (
    REPO,
    Kubectl,
    OperatorProcess,
    WebhookService,
    install_api,
    start_operator,
    start_service,
    wait_for,
)
from wallestars_api.kubeclient import KubeClient

TASKS = "/apis/agents.wallestars.io/v1alpha1/namespaces/{ns}/agenttasks"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
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
    """POST every body; returns name -> wall time (time.time()) its 201 arrived.

    ``rate`` set: open loop, body i is sent at start + i/rate whatever earlier ones do.
    Unset: as fast as ``concurrency`` requests in flight allow.
    """
    created: dict[str, float] = {}
    took: list[float] = []
    path = TASKS.format(ns=ns)
    sem = asyncio.Semaphore(concurrency)
    start = time.time()

    async def one(i: int, body: dict[str, Any]) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.time()))
            sent = time.time()
            await client.request("POST", path, body)
        else:
            async with sem:
                sent = time.time()
                await client.request("POST", path, body)
        created[body["metadata"]["name"]] = now = time.time()
        took.append(now - sent)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    CREATE_LATENCY[:] = took
    return created


# Latency of the last create_tasks call's POSTs (seconds): how loaded the API server was.
CREATE_LATENCY: list[float] = []


@dataclass
class PhaseWatch:
    """First moment (wall time, comparable with other processes on this machine) each
    object was seen in each phase; objects without status.phase count as Pending."""

    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    rv: str = "0"

    def first(self, name: str, phases: Iterable[str]) -> float | None:
        times = [t for p, t in self.seen.get(name, {}).items() if p in phases]
        return min(times) if times else None

    def count(self, phase: str) -> int:
        return sum(1 for s in self.seen.values() if phase in s)

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # last seen of each

    async def run(self, client: KubeClient, ns: str, path: str = TASKS) -> None:
        while True:  # the API server ends a watch after its timeout; resume from the last rv
            params = {"resourceVersion": self.rv, "allowWatchBookmarks": "true"}
            async for ev in client.watch(path.format(ns=ns), params):
                now = time.time()
                obj = ev.get("object") or {}
                self.rv = (obj.get("metadata") or {}).get("resourceVersion", self.rv)
                if ev.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                phase = (obj.get("status") or {}).get("phase") or "Pending"
                self.seen.setdefault(obj["metadata"]["name"], {}).setdefault(phase, now)
                self.objects[obj["metadata"]["name"]] = obj


@dataclass
class Run:
    tasks: PhaseWatch
    jobs: PhaseWatch
    created: dict[str, float]  # task name -> wall time its create returned
    t0: float  # wall time just before the first create


async def run_tasks(
    kubeconfig: Path, ns: str, bodies: list[dict[str, Any]], rate: float | None = None,
    limit: float = 3600, watch_jobs: bool = False, create_in_flight: int = 8,
) -> Run:  # fmt: skip
    """Create the tasks, watching them (and their Jobs), until every one Succeeded."""
    client = KubeClient.from_env(kubeconfig, connections=max(16, create_in_flight))
    run = Run(PhaseWatch(), PhaseWatch(), {}, 0.0)
    watchers = [asyncio.create_task(run.tasks.run(client, ns))]
    if watch_jobs:
        watchers.append(asyncio.create_task(run.jobs.run(client, ns, JOBS)))
    try:
        await asyncio.sleep(0.5)
        run.t0 = time.time()
        run.created = await create_tasks(
            client, ns, bodies, rate=rate, concurrency=create_in_flight
        )
        deadline = time.time() + limit
        # Only these tasks count: the namespace may hold others (bench/operator_http.py's
        # expiry phase keeps 2,000 finished ones there).
        waiting = {b["metadata"]["name"] for b in bodies}
        while waiting:
            waiting = {n for n in waiting if "Succeeded" not in run.tasks.seen.get(n, {})}
            if time.time() > deadline:
                raise TimeoutError(f"{len(bodies) - len(waiting)} of {len(bodies)} succeeded")
            await asyncio.sleep(0.05)
        return run
    finally:
        for w in watchers:
            w.cancel()
        for w in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        await client.close()


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def percentiles(xs: list[float], *ps: float) -> dict[str, float]:
    """Percentiles of durations in seconds, as {"p50": ms, ...}."""
    if not xs:
        return {}
    return {f"p{p:g}": round(pct(xs, p) * 1000, 1) for p in ps}


def writer(user: str) -> str:
    """Who made a write, from the audit log's user name."""
    if user == "wallestars-admin":
        return "operator"  # tests and benchmarks run the operator as the admin
    if "wallestars-webhooks" in user:
        return "webhooks"
    if user.startswith("system:node:"):
        return "node"
    if user.startswith("system:serviceaccount:kube-system:"):
        return user.rsplit(":", 1)[1]  # the controller-manager's per-controller identities
    return user.removeprefix("system:")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a process (or of its waited-for children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
    return sum(int(x) for x in (fields[13:15] if children else fields[11:13])) / CLK_TCK


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmHWM), MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


KUBEPODS_CPU = Path("/sys/fs/cgroup/cpuacct/kubepods/cpuacct.usage")


class CpuMeter:
    """CPU seconds each named process used between start() and stop()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.before: dict[str, float] = {}
        self.wall = 0.0

    def sample(self) -> dict[str, float]:
        own = {n: cpu_seconds(p) for n, p in self.pids.items()}
        # The node stand-in's children are the pods' processes (the agents).
        if "node" in self.pids:
            own["pods (node's children)"] = cpu_seconds(self.pids["node"], children=True)
        # On the real node the pods' processes are in the kubelet's cgroup instead.
        if "kubelet" in self.pids and KUBEPODS_CPU.exists():
            own["pods (kubepods cgroup)"] = int(KUBEPODS_CPU.read_text()) / 1e9
        return own

    def start(self) -> None:
        self.before = self.sample()
        self.wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        used = {n: round(v - self.before[n], 1) for n, v in self.sample().items()}
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


@dataclass
class Env:
    """A benchmark's world: control plane, webhook service, operator, agent processes."""

    cluster: localcluster.Cluster
    svc: WebhookService
    op: OperatorProcess
    extra: list[subprocess.Popen[bytes]]

    def pids(self) -> dict[str, int]:
        st = localcluster.State.load(self.cluster.dir / "state.json")
        assert st is not None
        own = {
            "operator": self.op.proc.pid,
            "webhooks": self.svc.proc.pid,
            "benchmark": os.getpid(),
        }
        own.update({f"agent-{i}": p.pid for i, p in enumerate(self.extra)})
        return {**st.pids, **own}


@contextlib.contextmanager
def bench_environment(
    dir_name: str, ns: str, agent: Callable[[Kubectl], list[subprocess.Popen[bytes]]],
    qps: float, burst: int, audit: bool = False, real_node: bool = False,
    operator_env: dict[str, str] | None = None,
) -> Iterator[Env]:  # fmt: skip
    """A fresh control plane in .cluster/<dir_name> with the CRDs, the chart's RBAC, the
    webhook service, the Agent(s) ``agent`` sets up in ``ns``, and the operator; pods on
    the node stand-in, or on the real node (the webhook service then listens on the
    node's address, where pods can call back)."""
    state = REPO / ".cluster" / dir_name
    cluster = localcluster.up(
        state, ports=localcluster.Ports.free(), audit=audit, real_node=real_node
    )
    procs: list[Any] = []
    try:
        install_api(cluster)
        Kubectl(cluster.kubeconfig)("create", "namespace", ns)
        masters = [os.urandom(32)]
        svc = start_service(cluster, Path(tempfile.mkdtemp()), masters, host=cluster.host)
        procs.append(svc)
        extra = agent(Kubectl(cluster.kubeconfig, ns))
        procs.extend(extra)
        op = start_operator(cluster, Path(tempfile.mkdtemp()), masters, svc.url,
                            WALLESTARS_API_QPS=str(qps), WALLESTARS_API_BURST=str(burst),
                            **(operator_env or {}))  # fmt: skip
        procs.append(op)
        # Load starts once the operator is past start-up: its first pass comes a second
        # after it is live (the watches list what exists first), and tasks created in that
        # second would measure the start-up, not the steady state.
        wait_for("the operator's first reconcile pass",
                 lambda: op.metric("wallestars_operator_reconcile_pass_duration_seconds_count") >= 1)  # fmt: skip
        yield Env(cluster, svc, op, extra)
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop() if hasattr(p, "stop") else p.terminate()
        localcluster.down(state)
