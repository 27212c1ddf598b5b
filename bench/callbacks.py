"""Callback benchmark: valid callbacks open-loop at a fixed rate, and forged ones with wrk.

    .venv/bin/python bench/callbacks.py [--rate 200] [--seconds 60] [--runs 3] [--tasks 200]

1. Valid: ``--rate`` callbacks/s for ``--seconds``, sent on schedule whatever the
   replies (open loop: a late reply never delays the next send, so queueing shows up in
   the latency). Each is a signed progress callback for one of ``--tasks`` dispatched
   AgentTasks, so each costs the service one GET and one PATCH of agenttasks/status.
   Latency is measured from the scheduled send time. The service's Server-Timing
   header splits each answer into the API server's share and the service's own.
2. Forged: wrk on one core hammers the service, pinned to the other core, with a
   callback signed by a wrong key; every answer must be 401 and the service must make
   no API call (its own counter of API calls does not move).

Runs on its own local control plane (.cluster/bench), without audit logging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import localcluster
from harness import REPO, Kubectl, WebhookService, free_port, install_api, start_service
from tlslocal import write_tls
from wallestars_sdk import AgentClient, AgentConfig
from wallestars_sdk.signing import sign_headers

from bench.load import pct


def make_tasks(k: Kubectl, n: int) -> list[tuple[str, str]]:
    items = [
        {
            "apiVersion": "agents.wallestars.io/v1alpha1",
            "kind": "AgentTask",
            "metadata": {"name": f"b-{i}"},
            "spec": {"agentRef": "bench", "type": "custom", "payload": {}},
        }
        for i in range(n)
    ]
    k.apply({"apiVersion": "v1", "kind": "List", "items": items})

    def dispatch(i: int) -> None:
        k.patch_status(
            "agenttask", f"b-{i}", {"phase": "Dispatched", "attempt": 1, "agent": "bench"}
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(dispatch, range(n)))
    got = k.json("get", "agenttasks")["items"]
    return [(o["metadata"]["name"], o["metadata"]["uid"]) for o in got]


async def open_loop(
    svc: WebhookService,
    ns: str,
    tasks: list[tuple[str, str]],
    rate: float,
    seconds: float,
    run: int,
) -> dict[str, Any]:
    n = int(rate * seconds)
    results: list[tuple[int, float, float, float]] = []  # status, latency, api, app
    conn = aiohttp.TCPConnector(limit=0, ssl=client_tls(svc))
    async with aiohttp.ClientSession(connector=conn) as s:

        async def send(i: int, scheduled: float) -> None:
            name, uid = tasks[i % len(tasks)]
            raw = json.dumps({
                "taskId": uid, "agentId": "bench", "task": {"namespace": ns, "name": name}, "attempt": 1,
                "status": "running", "progress": (i // len(tasks)) % 100,
            }).encode()  # fmt: skip
            headers = {
                **sign_headers([svc.key(uid, 1)], f"msg_r{run}_{i}", int(time.time()), raw),
                "Content-Type": "application/json",
            }
            try:
                async with s.post(svc.callback_url(uid, 1), data=raw, headers=headers) as r:
                    await r.read()
                    timing = dict(
                        re.findall(r"(\w+);dur=([0-9.]+)", r.headers.get("Server-Timing", ""))
                    )
                    results.append(
                        (
                            r.status,
                            time.perf_counter() - scheduled,
                            float(timing.get("api", "nan")),
                            float(timing.get("app", "nan")),
                        )
                    )
            except Exception:
                results.append((0, time.perf_counter() - scheduled, float("nan"), float("nan")))

        t0 = time.perf_counter() + 0.2
        pending = []
        for i in range(n):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(send(i, at)))
        await asyncio.gather(*pending)
    ok = [r for r in results if r[0] == 200]
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r[0])] = codes.get(str(r[0]), 0) + 1
    lat = [r[1] * 1000 for r in ok]
    api = [r[2] for r in ok]
    app = [r[3] for r in ok]
    return {
        "sent": n, "ok": len(ok), "errors": n - len(ok),
        "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
        "api_p50_ms": pct(api, 50), "api_p99_ms": pct(api, 99),
        "app_p50_ms": pct(app, 50), "app_p99_ms": pct(app, 99), "codes": codes,
    }  # fmt: skip


def client_tls(svc: WebhookService) -> ssl.SSLContext | bool:
    """Trust the service's CA when it serves TLS (--tls), as an agent given it does."""
    ca = svc.env.get("WALLESTARS_BENCH_CA")
    return ssl.create_default_context(cafile=ca) if ca else True


def forged(svc: WebhookService, ns: str, task: tuple[str, str], seconds: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    name, uid = task
    raw = json.dumps(
        {
            "taskId": uid,
            "agentId": "x",
            "task": {"namespace": ns, "name": name},
            "attempt": 1,
            "status": "success",
        }
    )
    # A current timestamp (refreshed below for each run) with a signature from a wrong key.
    headers = sign_headers([os.urandom(32)], "msg_forged", int(time.time()), raw.encode())
    lua = (
        "wrk.method = 'POST'\n"
        + f"wrk.body = {json.dumps(raw)}\n"
        + "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    lua += "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(lua)
    calls_before = api_calls(svc)
    subprocess.run(["taskset", "-cp", "0", str(svc.proc.pid)], check=True, capture_output=True)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "-s", str(script), svc.callback_url(uid, 1)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    subprocess.run(["taskset", "-cp", "0-1", str(svc.proc.pid)], check=True, capture_output=True)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    return {"requests": total, "refused": non2xx, "per_second": rps, "api_calls": api_calls(svc) - calls_before,
            "status_401": svc.metric("wallestars_callbacks_total", verdict="bad-signature")}  # fmt: skip


async def overload(
    svc: WebhookService, ns: str, load: list[tuple[str, str]], finals: list[tuple[str, str]],
    rate: float, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """``rate`` callbacks/s for ``seconds``, open loop: progress reports for ``load``
    tasks, and among them, spread evenly, one final result for each of ``finals`` sent
    by the SDK as an agent would (retried to the attempt's deadline, never sooner than
    Retry-After). Every final must be delivered; how long each took."""
    n_final = len(finals)
    progress_rate = rate - n_final / seconds
    delivered: list[float] = []
    lost: list[str] = []
    conn = aiohttp.TCPConnector(limit=0, ssl=client_tls(svc))
    async with aiohttp.ClientSession(connector=conn) as session:

        async def final(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            name, uid = finals[i]
            cfg = AgentConfig(callback_url=svc.callback_url(uid, 1), task_uid=uid, task_namespace=ns,
                              task_name=name, attempt=1, key_file=Path("/unused"), timeout_seconds=300)  # fmt: skip
            agent = AgentClient(cfg, svc.key(uid, 1), session=session)
            try:
                await agent.succeed({"final": i})
                delivered.append(time.perf_counter() - at)
            except Exception as e:  # a lost result: what the benchmark must never see
                lost.append(f"{name}: {e!r}"[:200])

        t0 = time.perf_counter() + 0.5
        finals_done = asyncio.gather(
            *(final(i, t0 + i * seconds / n_final) for i in range(n_final))
        )
        progress = await open_loop(svc, ns, load, progress_rate, seconds, 99)
        await finals_done
    codes = progress.pop("codes", {})
    return {"rate": rate, "seconds": seconds, "finals": n_final, "delivered": len(delivered),
            "lost": len(lost), "lost_examples": lost[:3],
            "delivery_ms": {f"p{p}": round(pct([d * 1000 for d in delivered], p)) for p in (50, 90, 99)}
            | {"max": round(max(delivered, default=0) * 1000)},
            "progress": {"sent": progress["sent"], "ok": progress["ok"], "answers": codes}}  # fmt: skip


API_CALLS = "wallestars_webhook_api_request_duration_seconds_count"


def api_calls(svc: WebhookService, operations: tuple[str, ...] = ("get", "patch")) -> float:
    return sum(svc.metric(API_CALLS, operation=op) for op in operations)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--forged-seconds", type=int, default=15)
    p.add_argument(
        "--pprof", type=Path, help="write a 15 s CPU profile of the API server under load here"
    )
    p.add_argument(
        "--overload",
        action="store_true",
        help="instead: --rate callbacks/s (twice capacity: 280) for --seconds, with "
        "--finals final results among them sent by the SDK; none may be lost",
    )
    p.add_argument("--finals", type=int, default=1200)
    p.add_argument(
        "--tls",
        action="store_true",
        help="the service over HTTPS (the chart's default), clients verifying its CA",
    )
    p.add_argument(
        "--progress-window",
        type=float,
        help="the service's WALLESTARS_PROGRESS_WINDOW_SECONDS (0: no coalescing, the before)",
    )
    a = p.parse_args()
    state = REPO / ".cluster" / "bench"
    cluster = localcluster.up(
        state, ports=localcluster.Ports.free(), node=False, profiling=a.pprof is not None
    )
    try:
        k = Kubectl(cluster.kubeconfig)
        install_api(cluster)
        ns = "bench"
        k("create", "namespace", ns)
        tasks = make_tasks(Kubectl(cluster.kubeconfig, ns), a.tasks)
        tmp, masters = Path(tempfile.mkdtemp()), [os.urandom(32)]
        env: dict[str, str] = {}
        if a.progress_window is not None:
            env["WALLESTARS_PROGRESS_WINDOW_SECONDS"] = str(a.progress_window)
        if a.tls:
            tls = write_tls(tmp / "tls")
            env |= tls.service_env(mutual=False) | {
                "WALLESTARS_OPS_PORT": str(free_port()),
                "WALLESTARS_BENCH_CA": str(tls.ca),
            }
        svc = start_service(cluster, tmp, masters, **env)  # type: ignore[arg-type]
        try:
            if a.overload:
                names = {t[0] for t in tasks}
                finals = [t for t in make_tasks(Kubectl(cluster.kubeconfig, ns), a.tasks + a.finals)
                          if t[0] not in names]  # fmt: skip
                writes = api_calls(svc, ("patch",))
                res = asyncio.run(overload(svc, ns, tasks, finals, a.rate, a.seconds))
                res["status_writes"] = round(api_calls(svc, ("patch",)) - writes)
                res["writes_per_task"] = round(res["status_writes"] / (len(tasks) + len(finals)), 2)
                res["progress_coalesced"] = svc.metric(
                    "wallestars_webhook_progress_coalesced_total"
                )
                got = Kubectl(cluster.kubeconfig, ns).json("get", "agenttasks")["items"]
                final_names = {t[0] for t in finals}
                res["finals_succeeded_in_status"] = sum(
                    1 for o in got if o["metadata"]["name"] in final_names
                    and (o.get("status") or {}).get("phase") == "Succeeded")  # fmt: skip
                print(json.dumps({"overload": res}))
                return
            runs = []
            if a.pprof:
                profiler = subprocess.Popen(
                    ["curl", "-s", "--cacert", str(cluster.pki / "ca.crt"), "--cert", str(cluster.pki / "admin.crt"),
                     "--key", str(cluster.pki / "admin.key"), "-o", str(a.pprof), f"{cluster.server}/debug/pprof/profile?seconds=15"]
                )  # fmt: skip
            for r in range(a.runs):
                writes = api_calls(svc, ("patch",))
                res = asyncio.run(open_loop(svc, ns, tasks, a.rate, a.seconds, r))
                res["status_writes"] = round(api_calls(svc, ("patch",)) - writes)
                res["writes_per_callback"] = round(res["status_writes"] / max(1, res["sent"]), 3)
                runs.append(res)
                print(
                    json.dumps(
                        {
                            "valid_run": r + 1,
                            **{
                                k_: round(v, 3) if isinstance(v, float) else v
                                for k_, v in res.items()
                            },
                        }
                    )
                )
            if a.pprof:
                profiler.wait()
            # The median of each number over the runs (the status-code counts are a dict each).
            med = {
                key: round(statistics.median(x[key] for x in runs), 3)
                for key, v in runs[0].items()
                if isinstance(v, int | float)
            }
            print(json.dumps({"valid_median_of_runs": med}))
            forged_runs = []
            for r in range(a.runs):
                f = forged(svc, ns, tasks[0], a.forged_seconds)
                forged_runs.append(f)
                print(json.dumps({"forged_run": r + 1, **f}))
            print(json.dumps({"forged_median_per_second": statistics.median(f["per_second"] for f in forged_runs),
                              "forged_api_calls": sum(f["api_calls"] for f in forged_runs)}))  # fmt: skip
        finally:
            svc.stop()
    finally:
        localcluster.down(state)


if __name__ == "__main__":
    main()
