"""Browser agent benchmark: each task type's latency and memory, beside bare Playwright.

    .venv/bin/python bench/browser_tasks.py [--runs 7] [--types screenshot,scrape,...]
        [--browser chromium|firefox]

One attempt = `python -m wallestars_browser` as a process (the Job's entrypoint) with an
attempt's environment, against the real webhook service on a local control plane (the
task is put in phase Dispatched as the operator would leave it, so the operator's and
the Job's own latencies — measured by bench/operator_jobs.py — stay out). Its time is
split into process start (interpreter and imports), browser launch (egress proxy +
Chromium), page work, upload and callback, from the timings line the agent logs. The
bare script (bench/agents/bare_playwright.py) does the same page work in one process
with no proxy, SDK, upload or callback; the ratio of medians is the agent's overhead.
Memory: the peak of the summed PSS of the process tree (Python, Playwright's driver,
Chromium's processes, smokescreen), sampled every 25 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import localcluster
from harness import (
    REPO,
    Kubectl,
    dispatched_task,
    free_port,
    install_api,
    start_fixture_site,
    start_service,
    wait_for,
)
from wallestars_sdk.keys import encode_key

from bench.load import pct

NS = "bench-browser"


def payloads(site: str) -> dict[str, dict[str, Any]]:
    """The same work as bench/agents/bare_playwright.py does, per task type."""
    return {
        "screenshot": {"url": f"{site}/", "fullPage": True},
        "scrape": {"url": f"{site}/list", "fields": {"items": {"selector": ".item", "all": True}},
                   "pagination": {"nextSelector": "#next"}},
        "e2e-test": {"url": f"{site}/form", "steps": [
            {"action": "fill", "selector": "#name", "value": "Ada"},
            {"action": "select", "selector": "#plan", "value": "pro"},
            {"action": "click", "selector": "#submit"},
            {"action": "waitForUrl", "value": "**/form/done*"},
            {"action": "waitForSelector", "selector": "#thanks"}]},
        "performance": {"url": f"{site}/heavy"},
        "accessibility": {"url": f"{site}/form", "thresholds": {"total": 100}},
    }  # fmt: skip


def tree_pss_kb(root: int) -> int:
    """Summed PSS of a process and its descendants (shared pages counted once overall)."""
    parents: dict[int, int] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                parents[int(p)] = int(
                    Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == parent and c not in tree]
        tree.update(kids)
        frontier += kids
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak tree PSS in MB, stderr) of one process run to its end."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))
            time.sleep(0.025)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate(timeout=180)
    wall = time.monotonic() - t0
    th.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}:\n{err[-3000:]}")
    return wall, peak[0] / 1024, err


def timings(stderr: str) -> dict[str, float]:
    for line in stderr.splitlines():
        if line.startswith('{"timings"'):
            return dict(json.loads(line)["timings"])
    raise RuntimeError(f"no timings line in the agent's log:\n{stderr[-2000:]}")


def median(xs: list[float]) -> float:
    """The 50th percentile by the benchmarks' one rule (bench.load.pct), rounded."""
    return round(pct(xs, 50), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--types", default="screenshot,scrape,e2e-test,performance,accessibility")
    p.add_argument("--browser", choices=["chromium", "firefox"], default="chromium",
                   help="the agent's engine (firefox: Debian's firefox-esr over WebDriver BiDi); "
                        "the bare script stays Chromium, the reference for both")  # fmt: skip
    a = p.parse_args()
    chromium = shutil.which("chromium")
    assert chromium, "needs Debian's chromium (hack/setup.sh)"
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    state = REPO / ".cluster" / "bench-browser"
    cluster = localcluster.up(state, ports=localcluster.Ports.free(), node=False)
    port = free_port()
    site_proc = start_fixture_site(port)
    site = f"http://127.0.0.1:{port}"
    svc = None
    try:
        install_api(cluster)
        Kubectl(cluster.kubeconfig)("create", "namespace", NS)
        k = Kubectl(cluster.kubeconfig, NS)
        tmp = Path(tempfile.mkdtemp())
        svc = start_service(cluster, tmp / "webhooks", [os.urandom(32)])
        wait_for(
            "the site",
            lambda: subprocess.run(["curl", "-sf", site], capture_output=True).returncode == 0,
        )
        base_env = {**os.environ, "WALLESTARS_CHROMIUM": chromium, "WALLESTARS_BROWSER": a.browser,
                    "WALLESTARS_FIREFOX": shutil.which("firefox-esr") or "",
                    "WALLESTARS_SMOKESCREEN": str(smokescreen),
                    "WALLESTARS_NETWORK": json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{port}"]}),
                    "WALLESTARS_AGENT_ID": "bench", "WALLESTARS_ATTEMPT": "1",
                    "WALLESTARS_TASK_NAMESPACE": NS, "WALLESTARS_TIMEOUT_SECONDS": "120"}  # fmt: skip
        results: dict[str, Any] = {}
        work = payloads(site)
        for kind in a.types.split(","):
            agent: dict[str, list[float]] = {}
            bare_wall: list[float] = []
            bare_mem: list[float] = []
            for i in range(a.runs + 1):  # the first round warms caches and is not counted
                name, uid = dispatched_task(k, f"{kind}-{i}", type=kind, payload=work[kind])
                key = tmp / f"key-{uid}"
                key.write_text(encode_key(svc.key(uid, 1)))
                env = {**base_env, "WALLESTARS_CALLBACK_URL": svc.callback_url(uid, 1),
                       "WALLESTARS_TASK_UID": uid, "WALLESTARS_TASK_NAME": name,
                       "WALLESTARS_TASK_TYPE": kind, "WALLESTARS_PAYLOAD": json.dumps(work[kind]),
                       "WALLESTARS_KEY_FILE": str(key)}  # fmt: skip
                wall, mem, err = run_measured([sys.executable, "-m", "wallestars_browser"], env)
                phase = k.json("get", "agenttask", name)["status"]["phase"]
                assert phase == "Succeeded", (kind, phase, err[-2000:])
                bw, bm, _ = run_measured(
                    [sys.executable, str(REPO / "bench" / "agents" / "bare_playwright.py"), kind, site, chromium],
                    {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"},
                )  # fmt: skip
                if i == 0:
                    continue
                t = timings(err)
                for key_, v in {**t, "totalMs": wall * 1000, "peakMB": mem}.items():
                    agent.setdefault(key_, []).append(v)
                bare_wall.append(bw * 1000)
                bare_mem.append(bm)
            split = {k_: median(v) for k_, v in agent.items()}
            results[kind] = {
                "agent_ms": split,
                "bare_ms": median(bare_wall),
                "bare_peak_mb": median(bare_mem),
                "overhead_ratio": round(pct(agent["totalMs"], 50) / pct(bare_wall, 50), 2),
                "runs": a.runs,
            }  # fmt: skip
            print(json.dumps({kind: results[kind]}), flush=True)
        print(json.dumps({"browser": a.browser, "results": results, "cores": os.cpu_count()},
                         indent=1))  # fmt: skip
    finally:
        if svc is not None:
            svc.stop()
        site_proc.terminate()
        localcluster.down(state)


if __name__ == "__main__":
    main()
