"""Application API benchmark: a page of a large task list, and live updates to many
WebSocket clients.

    .venv/bin/python bench/console_api.py [--tasks 10000] [--clients 200] [--rate 50] [--seconds 30]

A control plane (no operator: the tasks are written directly, as the operator and the
webhook service would) and the console as a process; the callers use a ServiceAccount
token bound to `edit` in the namespace.

- list: ``--tasks`` AgentTasks in one namespace; then ``GET .../tasks?limit=50`` (the
  first page, and pages by their continue tokens) and a filtered page
  (``?type=echo&limit=50``), 50 times each: server time p50/p99 (goal: under 1 s); and
  the console's task list page in Chromium, signed in: first contentful paint, 10 loads
  (goal: under 1 s).
- live: ``--clients`` WebSocket clients following the namespace; ``--rate`` status writes
  per second for ``--seconds`` (each a task's progress); from a write sent (the API
  server's write included) to each client's receiving it: p50/p99 (goal p99 <= 500 ms), deliveries
  missing, and the console's CPU and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import localcluster
from harness import REPO, Kubectl, free_port, install_api, wait_for
from helmlocal import helm_bin
from wallestars_api.kubeclient import MERGE_PATCH, KubeClient

from bench.load import CpuMeter, percentiles, rss_mb

NS = "bench"
TASKS = f"/apis/agents.wallestars.io/v1alpha1/namespaces/{NS}/agenttasks"


async def fill(client: KubeClient, n: int) -> None:
    sem = asyncio.Semaphore(24)

    async def one(i: int) -> None:
        async with sem:
            await client.request("POST", TASKS, {
                "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": f"t{i:05d}"},
                "spec": {"agentRef": "nobody", "type": "echo" if i % 10 == 0 else "custom", "payload": {}}})  # fmt: skip

    await asyncio.gather(*(one(i) for i in range(n)))


async def page_times(url: str, token: str, runs: int) -> dict[str, Any]:
    hdrs = {"Authorization": f"Bearer {token}"}
    first: list[float] = []
    later: list[float] = []
    filtered: list[float] = []
    async with aiohttp.ClientSession(headers=hdrs) as s:
        for _ in range(runs):
            t0 = time.perf_counter()
            async with s.get(f"{url}/api/v1/namespaces/{NS}/tasks?limit=50") as r:
                body = await r.json()
                assert r.status == 200 and len(body["items"]) == 50, body
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            async with s.get(
                f"{url}/api/v1/namespaces/{NS}/tasks?limit=50&continue={body['continue']}"
            ) as r:
                assert r.status == 200
                await r.read()
            later.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            async with s.get(f"{url}/api/v1/namespaces/{NS}/tasks?type=echo&limit=50") as r:
                assert r.status == 200
                await r.read()
            filtered.append(time.perf_counter() - t0)
    return {"first_page_ms": percentiles(first, 50, 99), "next_page_ms": percentiles(later, 50, 99),
            "filtered_page_ms": percentiles(filtered, 50, 99)}  # fmt: skip


async def first_paint(url: str, token: str, runs: int) -> dict[str, Any]:
    """The task list page of the console in Chromium, signed in: first contentful paint."""
    import shutil

    from playwright.async_api import async_playwright

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/ui/login", data={"token": token, "next": "/ui/"}, allow_redirects=False
        ) as r,
    ):
        cookie = r.cookies["wallestars_session"].value
    paints: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        ctx = await browser.new_context()
        await ctx.add_cookies([{"name": "wallestars_session", "value": cookie, "url": url}])
        page = await ctx.new_page()
        for _ in range(runs):
            await page.goto(f"{url}/ui/ns/{NS}/tasks", wait_until="load")
            fcp = None
            for _ in range(
                100
            ):  # the entry comes a moment after load (no eval: the CSP forbids it)
                fcp = await page.evaluate(
                    "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null"
                )
                if fcp is not None:
                    break
                await asyncio.sleep(0.05)
            rows = await page.locator("#tasks tbody tr").count()
            assert fcp is not None and rows == 50, (
                fcp,
                rows,
                page.url,
                (await page.content())[:500],
            )
            paints.append(fcp / 1000)
        await browser.close()
    return {"first_contentful_paint_ms": percentiles(paints, 50, 99)}


async def live(url: str, client: KubeClient, token: str, a: argparse.Namespace) -> dict[str, Any]:
    stored: dict[tuple[str, int], float] = {}
    got: list[float] = []
    ready = 0
    n_writes = int(a.rate * a.seconds)
    names = [f"t{i:05d}" for i in range(min(a.tasks, 1000))]
    received: list[set[tuple[str, int]]] = [set() for _ in range(a.clients)]

    async def follow(i: int, s: aiohttp.ClientSession) -> None:
        nonlocal ready
        async with s.ws_connect(f"{url}/api/v1/ws?namespace={NS}", headers={"Authorization": f"Bearer {token}"},
                                max_msg_size=0, heartbeat=None) as ws:  # fmt: skip
            ready += 1
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                m = json.loads(msg.data)
                if m["event"] != "task:update":
                    continue
                key = (m["data"]["name"], m["data"]["progress"])
                if key in stored and key not in received[i]:
                    received[i].add(key)
                    got.append(time.time() - stored[key])

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        followers = [asyncio.create_task(follow(i, s)) for i in range(a.clients)]
        for _ in range(600):
            if ready == a.clients:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(5)  # the initial lists (up to 500 tasks each) drain
        start = time.monotonic()

        async def write(k: int) -> None:
            name, progress = names[k % len(names)], 1 + k // len(names) % 99
            # From the write sent: the API server's own write time is in the figure.
            stored[(name, progress)] = time.time()
            await client.request("PATCH", f"{TASKS}/{name}/status",
                                 {"status": {"phase": "Running", "progress": progress}}, MERGE_PATCH)  # fmt: skip

        pending = []
        for k in range(n_writes):
            due = start + k / a.rate
            if (w := due - time.monotonic()) > 0:
                await asyncio.sleep(w)
            pending.append(asyncio.create_task(write(k)))
        await asyncio.gather(*pending)
        await asyncio.sleep(5)
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    missing = sum(len(stored) - len(r) for r in received)
    return {"clients": a.clients, "writes": len(stored), "deliveries": len(got), "missing": missing,
            "write_to_client_ms": {**percentiles(got, 50, 99), "max": round(max(got, default=0) * 1000, 1)}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=30.0)
    a = p.parse_args()
    state = REPO / ".cluster" / "bench-console"
    cluster = localcluster.up(state, ports=localcluster.Ports.free())
    proc = None
    try:
        install_api(cluster)
        admin = Kubectl(cluster.kubeconfig)
        admin("create", "namespace", NS)
        k = Kubectl(cluster.kubeconfig, NS)
        k("create", "serviceaccount", "caller")
        k(
            "create",
            "rolebinding",
            "caller-edit",
            "--clusterrole=edit",
            f"--serviceaccount={NS}:caller",
        )
        helm = str(helm_bin())
        admin.apply(subprocess.run([helm, "template", "wallestars", str(REPO / "charts" / "wallestars-agents"),
                                    "--show-only", "templates/aggregate-roles.yaml"],
                                   capture_output=True, text=True, check=True).stdout)  # fmt: skip
        token = k("create", "token", "caller", "--duration=2h").strip()
        port = free_port()
        log = Path(tempfile.mkdtemp()) / "console.log"
        proc = subprocess.Popen([sys.executable, "-m", "wallestars_console"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                env={**os.environ, "WALLESTARS_CONSOLE_KUBECONFIG": str(cluster.kubeconfig),
                                     "WALLESTARS_CONSOLE_HOST": "127.0.0.1", "WALLESTARS_CONSOLE_PORT": str(port), "WALLESTARS_CONSOLE_METRICS_PORT": str(free_port())})  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for(
            "the console",
            lambda: (
                subprocess.run(["curl", "-sf", f"{url}/healthz"], capture_output=True).returncode
                == 0
            ),
        )

        async def run() -> dict[str, Any]:
            client = KubeClient.from_env(cluster.kubeconfig, connections=32)
            t0 = time.monotonic()
            await fill(client, a.tasks)
            made = time.monotonic() - t0
            pages = await page_times(url, token, a.runs)
            paint = await first_paint(url, token, 10)
            cpu = CpuMeter({"console": proc.pid})
            cpu.start()
            follow = await live(url, client, token, a)
            used = cpu.stop()
            await client.close()
            return {"tasks": a.tasks, "created_in_s": round(made, 1), **pages, **paint, "live": follow,
                    "console_cpu": used, "console_memory_mb": rss_mb(proc.pid)}  # fmt: skip

        print(json.dumps(asyncio.run(run()), indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        localcluster.down(state)


if __name__ == "__main__":
    main()
