"""The main job on the embedded default (`make demo`).

A local control plane (hack/localcluster.py, state in .cluster/dev), the CRDs and the
webhook service's RBAC from the chart, the webhook service and the operator as local
processes, a small web site on loopback, a browser Agent running the real agent
(`python -m wallestars_browser`: Playwright, Debian's Chromium, the smokescreen egress
proxy) and three AgentTasks — a screenshot, a scrape and an accessibility check — shown
with `kubectl get agenttasks` once they finished. The cluster keeps running afterwards
(`make down` stops it); the operator, webhook service and site stop with this script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import localcluster
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    browser_agent,
    free_port,
    install_api,
    phase_is,
    start_operator,
    start_service,
    wait_for,
)

NS = "demo"


def main() -> int:
    # WALLESTARS_DEMO_DIR: another state dir on free ports (the test of this demo uses it).
    custom = os.environ.get("WALLESTARS_DEMO_DIR")
    state = Path(custom) if custom else REPO / ".cluster" / "dev"
    print(f"starting the control plane in {state} ...", flush=True)
    cluster = localcluster.up(state, ports=localcluster.Ports.free() if custom else None)
    admin = Kubectl(cluster.kubeconfig)
    install_api(cluster)
    admin.run("create", "namespace", NS, check=False)
    admin("label", "--overwrite", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    k = Kubectl(cluster.kubeconfig, NS)

    work = Path(tempfile.mkdtemp(prefix="wallestars-demo-"))
    port = free_port()
    site = subprocess.Popen([sys.executable, str(REPO / "tests" / "fixture_site.py"), str(port)])
    masters = [os.urandom(32)]
    svc = start_service(cluster, work / "webhooks", masters)
    op = start_operator(cluster, work / "operator", masters, svc.url)
    try:
        smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
        chromium = shutil.which("chromium") or "chromium"
        browser_agent(k, [sys.executable, "-m", "wallestars_browser"], name="chromium", slots=3,
                      env=[{"name": "WALLESTARS_CHROMIUM", "value": chromium},
                           {"name": "WALLESTARS_SMOKESCREEN", "value": str(smokescreen)}],
                      network={"allowPrivateAddresses": [f"127.0.0.1:{port}"]})  # fmt: skip
        site_url = f"http://127.0.0.1:{port}"
        tasks = {
            "homepage-screenshot": ("screenshot", {"url": f"{site_url}/", "fullPage": True}),
            "list-scrape": ("scrape", {"url": f"{site_url}/list", "selectors": {"title": "h1"},
                                       "fields": {"items": {"selector": ".item", "all": True}},
                                       "pagination": {"nextSelector": "#next"}}),
            "signup-accessibility": ("accessibility", {"url": f"{site_url}/form"}),
        }  # fmt: skip
        k("delete", "agenttasks", "--all", "--wait=true")  # a fresh run each time
        for name, (type_, payload) in tasks.items():
            k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                     "metadata": {"name": name},
                     "spec": {"agentRef": "chromium", "type": type_, "payload": payload}})  # fmt: skip
        t0 = time.monotonic()
        for name in tasks:
            wait_for(name, lambda n=name: phase_is(k, n, *TERMINAL_PHASES), timeout=180)  # type: ignore[misc]
        print(f"\nall finished in {time.monotonic() - t0:.1f} s\n")
        # The Agent's counters are refreshed by the operator a moment later.
        wait_for("the Agent's status", lambda: k.json("get", "agent", "chromium")
                 .get("status", {}).get("activeTasks") == 0, timeout=30)  # fmt: skip
        for cmd in (["get", "agents"], ["get", "agenttasks"],
                    ["get", "agenttask", "list-scrape", "-o", "jsonpath={.status.result.data.data}"],
                    ["get", "agenttask", "homepage-screenshot",
                     "-o", "jsonpath={.status.result.artifacts[0]}"]):  # fmt: skip
            print(f"$ kubectl -n {NS} {' '.join(cmd)}")
            print(k(*cmd).rstrip() + "\n")
        print(
            f"The cluster keeps running: export KUBECONFIG={cluster.kubeconfig}   (make down stops it)"
        )
        return 0
    finally:
        op.stop()
        svc.stop()
        site.terminate()


if __name__ == "__main__":
    sys.exit(main())
