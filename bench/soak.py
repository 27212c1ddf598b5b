"""Soak under faults (#15): no task is ever stuck, no result is ever lost.

    .venv/bin/python bench/soak.py [--http-tasks 10000] [--browser-tasks 500] [--rate 60]

http-agent tasks (tests/agents/http_function.py) and browser-Job tasks (the node stand-in,
bench/agents/noop_agent.sh) are created at ``--rate`` per second while everything that
goes wrong in a production cluster goes wrong: hack/faultproxy.py between the operator
and the API server and between the webhook service and the API server answers 5% of
requests 500/503/429 and cuts watch streams every 200-2,000 events; the API server
itself is SIGKILLed and restarted 3 times, the operator SIGKILLed 5 times and the
webhook service 3 times (each started again at once, as a Deployment would); the
function sends 10% of its results twice (the same signed message) and follows 5% with
a progress callback that arrives after the result. Then the same tasks on a fresh
cluster with no faults, for the clean rate beside the faulty one.

What must hold (``problems``; tests/integration/test_soak.py runs a small soak and
asserts the same): every task terminal within its deadline; exactly one terminal
transition per task, counted from the API server's audit log over every writer's status
writes (a write stored just before a SIGKILL of the API server can be missing from
its log: the task's final phase stands in for it, and such tasks are listed); every
final result the webhook service acknowledged (2xx) is the one in the
task's status; no Job or key Secret without its task, no Job still running for a
finished task; the operator's memory under 200 MB after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import faultproxy
import localcluster
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    OperatorProcess,
    WebhookService,
    browser_agent,
    free_port,
    http_agent,
    install_api,
    start_operator,
    start_service,
    wait_for,
)
from wallestars_api.kubeclient import ApiError, KubeClient

from bench.load import TASKS, rss_mb

NS = "soak"
TIMEOUT_SECONDS = 120  # each attempt's deadline
RETRIES: dict[str, int] = {"limit": 3, "backoffSeconds": 1, "maxBackoffSeconds": 4}
MEMORY_LIMIT_MB = 200


@dataclass(frozen=True)
class Mix:
    """The faults of one soak (all zero: a clean run)."""

    api_error: float = 0.05  # 500/503/429 to our components' requests
    watch_cut: tuple[int, int] | None = (200, 2000)
    api_restarts: int = 3
    operator_kills: int = 5
    webhook_kills: int = 3
    duplicate: float = 0.10
    reorder: float = 0.05

    @classmethod
    def clean(cls) -> Mix:
        return cls(0.0, None, 0, 0, 0, 0.0, 0.0)


@dataclass
class Summary:
    http_tasks: int
    browser_tasks: int
    mix: dict[str, Any]
    seconds: float = 0.0
    tasks_per_minute: float = 0.0
    phases: dict[str, int] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)  # terminal after their deadline, or never
    transitions: dict[str, int] = field(default_factory=dict)  # tasks by terminal transitions
    not_one_transition: list[str] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)  # final writes missing from the log
    acknowledged: int = 0  # final results the service answered 2xx
    lost: list[str] = field(default_factory=list)  # acknowledged but not in status
    orphans: list[str] = field(default_factory=list)
    operator_memory_mb: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    api_restart_seconds: list[float] = field(default_factory=list)


def problems(s: Summary) -> list[str]:
    """What broke the soak's promises (empty: none)."""
    out = []
    total = s.http_tasks + s.browser_tasks
    if sum(s.phases.get(p, 0) for p in TERMINAL_PHASES) != total:
        out.append(f"not every task is terminal: {s.phases}")
    if s.late:
        out.append(f"{len(s.late)} tasks ended after their deadline or not at all: {s.late[:5]}")
    if s.not_one_transition:
        out.append(f"tasks without exactly one terminal transition: {s.not_one_transition[:5]}")
    if s.unaudited and not s.faults.get("api-restart"):
        out.append(
            f"writes missing from the audit log with no API server killed: {s.unaudited[:5]}"
        )
    if s.lost:
        out.append(f"acknowledged results missing from status: {s.lost[:5]}")
    if s.orphans:
        out.append(f"orphans: {s.orphans[:5]}")
    if s.operator_memory_mb >= MEMORY_LIMIT_MB:
        out.append(f"operator memory {s.operator_memory_mb} MB after the run")
    mix = s.mix
    for key, fault in (("api_restarts", "api-restart"), ("operator_kills", "operator-kill"),
                       ("webhook_kills", "webhook-kill")):  # fmt: skip
        if s.faults.get(fault, 0) != mix[key]:
            out.append(f"{fault}: {s.faults.get(fault, 0)} of {mix[key]} happened during the run")
    if mix["api_error"] and not s.faults.get("error-500"):
        out.append("no API error was injected")
    return out


def bodies(http: int, browser: int, mix: Mix, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(http):
        r = rng.random()
        behaviour = ("duplicate" if r < mix.duplicate else
                     "reorder" if r < mix.duplicate + mix.reorder else "succeed")  # fmt: skip
        out.append(("h", i, "fn", {"data": {"behaviour": behaviour}}))
    out += [("b", i, "br", {"data": {}}) for i in range(browser)]
    rng.shuffle(out)
    return [{"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": f"{kind}{i}"},
             "spec": {"agentRef": agent, "type": "custom", "payload": payload,
                      "timeoutSeconds": TIMEOUT_SECONDS, "retries": RETRIES}}
            for kind, i, agent, payload in out]  # fmt: skip


def deadline_seconds() -> float:
    """The longest a task may take: every attempt to its deadline, with the backoffs."""
    n = RETRIES["limit"] + 1
    backoffs = sum(
        min(RETRIES["backoffSeconds"] * 2**i, RETRIES["maxBackoffSeconds"]) for i in range(n)
    )
    return float(n * TIMEOUT_SECONDS + backoffs + 30)


async def create(kubeconfig: Path, items: list[dict[str, Any]], rate: float) -> None:
    """Create every task at ``rate`` per second, through API server restarts (a create
    whose answer was lost is found as AlreadyExists when sent again)."""
    client = KubeClient.from_env(kubeconfig, connections=8)
    path = TASKS.format(ns=NS)
    start = time.time()

    async def one(i: int, body: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.time()))
        while True:
            try:
                await client.request("POST", path, body)
                return
            except ApiError as e:
                if e.code == 409:
                    return
            except (OSError, TimeoutError, aiohttp.ClientError):
                pass  # the API server restarting: send it again
            await asyncio.sleep(0.5)

    try:
        await asyncio.gather(*(one(i, b) for i, b in enumerate(items)))
    finally:
        await client.close()


@dataclass
class World:
    cluster: localcluster.Cluster
    tmp: Path
    masters: list[bytes]
    function: subprocess.Popen[bytes]
    function_url: str
    proxy: faultproxy.FaultProxy
    svc: WebhookService
    op: OperatorProcess
    fired: dict[str, int] = field(default_factory=dict)
    api_restart_seconds: list[float] = field(default_factory=list)

    def start_operator(self) -> OperatorProcess:
        return start_operator(self.cluster, self.tmp / "op", self.masters, self.svc.url,
                              api_url=self.proxy.url, WALLESTARS_API_QPS="1000",
                              WALLESTARS_API_BURST="2000", WALLESTARS_LEASE_SECONDS="3")  # fmt: skip

    def fire(self, fault: str) -> None:
        if fault == "api-restart":
            self.api_restart_seconds.append(round(localcluster.restart_apiserver(self.cluster), 1))
        elif fault == "operator-kill":
            self.op.proc.send_signal(signal.SIGKILL)
            self.op.proc.wait()
            self.op = self.start_operator()
        elif fault == "webhook-kill":
            self.svc.proc.send_signal(signal.SIGKILL)
            self.svc.proc.wait()
            port = int(self.svc.url.rsplit(":", 1)[1])
            self.svc = start_service(self.cluster, self.tmp / "svc", self.masters, port=port,
                                     api_url=self.proxy.url)  # fmt: skip
        self.fired[fault] = self.fired.get(fault, 0) + 1


@contextlib.contextmanager
def world(name: str) -> Iterator[World]:
    state = REPO / ".cluster" / name
    cluster = localcluster.up(state, ports=localcluster.Ports.free(), audit="status-bodies")
    procs: list[Any] = []
    try:
        install_api(cluster)
        Kubectl(cluster.kubeconfig)("create", "namespace", NS)
        tmp = Path(tempfile.mkdtemp(prefix="soak-"))
        port = free_port()
        fn = subprocess.Popen([sys.executable, str(REPO / "tests" / "agents" / "http_function.py"),
                               str(port)])  # fmt: skip
        procs.append(fn)
        proxy = faultproxy.start(cluster.server, cluster.pki / "ca.crt", free_port())
        procs.append(proxy)
        masters = [os.urandom(32)]
        svc = start_service(cluster, tmp / "svc", masters, api_url=proxy.url)
        k = Kubectl(cluster.kubeconfig, NS)
        http_agent(k, f"http://127.0.0.1:{port}/", name="fn", slots=200)
        browser_agent(k, ["/bin/sh", str(REPO / "bench" / "agents" / "noop_agent.sh")],
                      name="br", slots=20)  # fmt: skip
        w = World(cluster, tmp, masters, fn, f"http://127.0.0.1:{port}/", proxy, svc,
                  None)  # type: ignore[arg-type]  # fmt: skip
        w.op = w.start_operator()
        wait_for("the operator's first reconcile pass",
                 lambda: w.op.metric("wallestars_operator_reconcile_pass_duration_seconds_count") >= 1)  # fmt: skip
        try:
            yield w
        finally:
            with contextlib.suppress(Exception):
                w.op.stop()
            with contextlib.suppress(Exception):
                w.svc.stop()
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop() if hasattr(p, "stop") else p.terminate()
        localcluster.down(state)


def terminal_counts(k: Kubectl) -> tuple[int, list[dict[str, Any]]]:
    items: list[dict[str, Any]] = k.json("get", "agenttasks")["items"]
    done = sum(1 for t in items if (t.get("status") or {}).get("phase") in TERMINAL_PHASES)
    return done, items


def soak(http: int, browser: int, mix: Mix, rate: float, name: str = "soak") -> Summary:
    s = Summary(http, browser, asdict(mix))
    items = bodies(http, browser, mix, random.Random(15))
    with world(name) as w:
        k = Kubectl(w.cluster.kubeconfig, NS)
        if mix.api_error or mix.watch_cut:
            w.proxy.set(
                error=mix.api_error, watch_cut=list(mix.watch_cut) if mix.watch_cut else None
            )
        schedule = (["api-restart"] * mix.api_restarts + ["operator-kill"] * mix.operator_kills
                    + ["webhook-kill"] * mix.webhook_kills)  # fmt: skip
        random.Random(16).shuffle(schedule)
        creating = len(items) / rate
        # The faults spread over the creation window, each while tasks are in flight.
        gap = creating / (len(schedule) + 1) if schedule else 0
        t0 = time.time()
        creator = threading.Thread(
            target=lambda: asyncio.run(create(w.cluster.kubeconfig, items, rate))
        )
        creator.start()
        for i, fault in enumerate(schedule, start=1):
            time.sleep(max(0.0, t0 + gap * i - time.time()))
            w.fire(fault)
        creator.join()
        limit = t0 + creating + deadline_seconds()
        done_at = 0.0
        while True:
            done, tasks = terminal_counts(k)
            if done == len(items):
                done_at = time.time()
                break
            if time.time() > limit:
                break
            time.sleep(1 if len(items) < 2000 else 10)  # listing 10,000 tasks costs the API server
        w.proxy.set()
        s.seconds = round((done_at or time.time()) - t0, 1)
        s.tasks_per_minute = round(len(items) / s.seconds * 60) if done_at else 0
        time.sleep(5)  # Jobs' last writes, finished Jobs' pods
        _, tasks = terminal_counts(k)
        judge(s, w, k, tasks)
    return s


def judge(s: Summary, w: World, k: Kubectl, tasks: list[dict[str, Any]]) -> None:
    by_uid = {t["metadata"]["uid"]: t for t in tasks}
    for t in tasks:
        st = t.get("status") or {}
        phase = st.get("phase", "Pending")
        s.phases[phase] = s.phases.get(phase, 0) + 1
        created = t["metadata"]["creationTimestamp"]
        ended = st.get("completionTime")
        if (
            phase not in TERMINAL_PHASES
            or ended is None
            or (_epoch(ended) - _epoch(created) > deadline_seconds())
        ):
            s.late.append(t["metadata"]["name"])
    # Exactly one terminal transition per task, over every status write the API server
    # stored (whoever wrote it), in resourceVersion order.
    writes: dict[str, list[tuple[int, str]]] = {}
    # The API server rotates its audit log at 100 MB: the rotated files (named by time)
    # come first, then the current one.
    logs = [*sorted(w.cluster.logs.glob("audit-*.log")), w.cluster.logs / "audit.log"]
    for line in (ln for f in logs for ln in f.read_text().splitlines()):
        ev = json.loads(line)
        ref = ev.get("objectRef") or {}
        obj = ev.get("responseObject") or {}
        if (ev.get("stage") != "ResponseComplete" or ref.get("resource") != "agenttasks"
                or ref.get("subresource") != "status" or ref.get("namespace") != NS
                or (ev.get("responseStatus") or {}).get("code", 500) >= 300 or "metadata" not in obj):  # fmt: skip
            continue
        writes.setdefault(ref["name"], []).append(
            (int(obj["metadata"]["resourceVersion"]), (obj.get("status") or {}).get("phase", ""))
        )
    for t in tasks:
        name = t["metadata"]["name"]
        seq = [p for _, p in sorted(writes.get(name, []))]
        final = (t.get("status") or {}).get("phase", "")
        if (seq[-1] if seq else "") != final:
            # A write the audit log does not have: the API server was SIGKILLed after
            # storing it and before logging it. The object's phase is its last write.
            s.unaudited.append(f"{name}: {seq} + {final}")
            seq.append(final)
        n = sum(1 for a, b in itertools.pairwise(["", *seq])
                if b in TERMINAL_PHASES and a not in TERMINAL_PHASES)  # fmt: skip
        changed = any(a in TERMINAL_PHASES and b != a for a, b in itertools.pairwise(seq))
        s.transitions[str(n)] = s.transitions.get(str(n), 0) + 1
        if n != 1 or changed:
            s.not_one_transition.append(f"{name}: {seq}")
    # Every acknowledged final result is the task's result.
    with urllib.request.urlopen(w.function_url + "delivered", timeout=10) as r:  # noqa: S310
        delivered: dict[str, list[int]] = json.loads(r.read())
    for uid, attempts in delivered.items():
        s.acknowledged += len(attempts)
        task = by_uid.get(uid) or {}
        st = task.get("status") or {}
        got = ((st.get("result") or {}).get("data") or {}).get("attempt")
        if st.get("phase") != "Succeeded" or got not in attempts:
            name = task.get("metadata", {}).get("name", uid)
            s.lost.append(f"{name}: {attempts} -> {st.get('phase')} {got}")
    # No Job or key Secret without its task; no Job running for a finished task.
    uids = set(by_uid)
    for kind in ("jobs", "secrets"):
        for o in k.json("get", kind, "-l", "app.kubernetes.io/managed-by=wallestars-operator")[
            "items"
        ]:
            owners = {r["uid"] for r in o["metadata"].get("ownerReferences") or []}
            owner = next(iter(owners & uids), None)
            if owner is None:
                s.orphans.append(f"{kind}/{o['metadata']['name']} (no task)")
            elif (kind == "jobs" and (o.get("status") or {}).get("active")
                  and (by_uid[owner].get("status") or {}).get("phase") in TERMINAL_PHASES):  # fmt: skip
                s.orphans.append(f"jobs/{o['metadata']['name']} running for a finished task")
    # The operator running at the end (the last one started after a SIGKILL).
    s.operator_memory_mb = rss_mb(w.op.proc.pid)["VmRSS"]
    s.faults = {**w.proxy.stats(), **w.fired}
    s.api_restart_seconds = w.api_restart_seconds


def _epoch(ts: str) -> float:
    return time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http-tasks", type=int, default=10_000)
    p.add_argument("--browser-tasks", type=int, default=500)
    p.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="tasks created per second (above the operator's rate: a backlog)",
    )
    p.add_argument("--no-clean", action="store_true", help="skip the clean run")
    a = p.parse_args()
    faulty = soak(a.http_tasks, a.browser_tasks, Mix(), a.rate)
    out: dict[str, Any] = {"faulty": asdict(faulty), "problems": problems(faulty)}
    if not a.no_clean:
        clean = soak(a.http_tasks, a.browser_tasks, Mix.clean(), a.rate, name="soak-clean")
        out["clean"] = {"seconds": clean.seconds, "tasks_per_minute": clean.tasks_per_minute,
                        "problems": [p for p in problems(clean) if "happened" not in p
                                     and "no API error" not in p]}  # fmt: skip
    for key in ("late", "not_one_transition", "unaudited", "lost", "orphans"):
        out["faulty"][key] = out["faulty"][key][:10]
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
