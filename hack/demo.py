"""The main job on the embedded default (`make demo`).

A local control plane with a real node (hack/localcluster.py and hack/realnode: kubelet,
containerd, state in .cluster/dev), the Helm chart installed on it with its production
values and our images built here (hack/helmlocal.py), a small web site on the node's
address, a browser Agent on the chart's browser image and three AgentTasks — a
screenshot, a scrape and an accessibility check — each run in a container of the browser
image under Pod Security `restricted`, reaching the site through the egress proxy in its
pod and calling back through the webhook Service. Shown with `kubectl get agenttasks`
once they finished, with the scrape's data and the screenshot saved to a file. It ends
with the hybrid deploy check (examples/workflow-deploy-check.yaml, aimed at the site's
shop) run twice: an api-test by an in-cluster function (tests/agents/http_function.py
running the built-in cloud handler), an e2e test and a screenshot in Chromium, and, in
the second run, the visual regression against the first run's screenshot. The
cluster and the release keep running afterwards (`make down` stops them); the site stops
with this script.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import helmlocal
import localcluster
import yaml
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    deploy_test_function,
    download,
    free_port,
    http_agent,
    phase_is,
    reader_token,
    start_fixture_site,
    wait_for,
)
from realnode.config import NODE_IP

NS = "demo"
FUNCTIONS_NS = "demo-functions"


def main() -> int:
    # WALLESTARS_DEMO_DIR: another state dir on free ports (the test of this demo uses it).
    custom = os.environ.get("WALLESTARS_DEMO_DIR")
    state = Path(custom) if custom else REPO / ".cluster" / "dev"
    print(f"starting the control plane and the real node in {state} ...", flush=True)
    t0 = time.monotonic()
    cluster = localcluster.up(
        state, ports=localcluster.Ports.free() if custom else None, real_node=True
    )
    print(f"ready in {time.monotonic() - t0:.1f} s\n", flush=True)
    admin = Kubectl(cluster.kubeconfig)
    print("$ kubectl get nodes -o wide")
    print(admin("get", "nodes", "-o", "wide"))
    port = free_port()
    site = start_fixture_site(port, NODE_IP)  # on the node's address, where pods reach it
    try:
        print("helm install wallestars charts/wallestars-agents (our images) ...", flush=True)
        release = helmlocal.install(cluster, browser_namespaces=(NS,), reachable=((NODE_IP, port),),
                                    function_namespaces=(FUNCTIONS_NS,), console=True)  # fmt: skip
        k = Kubectl(cluster.kubeconfig, NS)
        print(f"$ kubectl -n {release.namespace} get pods -o wide")
        print(Kubectl(cluster.kubeconfig, release.namespace)("get", "pods", "-o", "wide"))
        # The chart's browser image (no image or command named), allowed to reach the site.
        k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent",
                 "metadata": {"name": "chromium"},
                 "spec": {"type": "browser", "concurrency": 3,
                          "capabilities": ["screenshot", "scrape", "accessibility", "e2e-test"],
                          "browser": {"network": {"allowPrivateAddresses": [f"{NODE_IP}:{port}"]}}}})  # fmt: skip
        site_url = f"http://{NODE_IP}:{port}"
        tasks = {
            "homepage-screenshot": ("screenshot", {"url": f"{site_url}/", "fullPage": True}),
            "list-scrape": ("scrape", {"url": f"{site_url}/list", "selectors": {"title": "h1"},
                                       "fields": {"items": {"selector": ".item", "all": True}},
                                       "pagination": {"nextSelector": "#next"}}),
            "signup-accessibility": ("accessibility", {"url": f"{site_url}/form"}),
        }  # fmt: skip
        # A fresh run each time (a workflow's steps go with it).
        k("delete", "agentworkflows,agenttasks", "--all", "--wait=true")
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
        # A task is Succeeded on its signed result; its container exits a moment later.
        wait_for("the tasks' pods to exit", lambda: all(
            p["status"].get("phase") == "Succeeded"
            for p in k.json("get", "pods", "-l", "agents.wallestars.io/task")["items"]), timeout=60)  # fmt: skip
        for cmd in (["get", "agents"], ["get", "agenttasks"], ["get", "pods", "-o", "wide"],
                    ["get", "agenttask", "list-scrape", "-o", "jsonpath={.status.result.data.data}"],
                    ["get", "agenttask", "homepage-screenshot",
                     "-o", "jsonpath={.status.result.artifacts[0]}"]):  # fmt: skip
            print(f"$ kubectl -n {NS} {' '.join(cmd)}")
            print(k(*cmd).rstrip() + "\n")
        shot = k.json("get", "agenttask", "homepage-screenshot")["status"]["result"]["artifacts"][0]
        saved = state / "homepage-screenshot.png"
        saved.write_bytes(
            download(release.webhooks_url, shot["uri"], reader_token(k), release.tls_context())
        )
        print(
            f"The screenshot ({shot['size']} bytes, sha256 {shot['sha256'][:12]}…) is served by the"
        )
        print(f"webhook service at {shot['uri']} to whoever may read the task;")
        print(f"a copy is in {saved}\n")
        deploy_check(cluster, release, k, site_url)
        console_access(cluster, release, k)
        print(f"The cluster and the release keep running: export KUBECONFIG={cluster.kubeconfig}")
        print("  helm -n wallestars-system status wallestars     make down stops everything")
        return 0
    finally:
        site.terminate()


def deploy_check(
    cluster: localcluster.Cluster, release: helmlocal.Release, k: Kubectl, site_url: str
) -> None:
    """The hybrid example, twice, as a deploy pipeline would create it after each deploy."""
    print("The hybrid deploy check (examples/workflow-deploy-check.yaml) against the site's")
    print("shop, with an in-cluster function as the api-checker Agent ...", flush=True)
    admin = Kubectl(cluster.kubeconfig)
    admin.run("create", "namespace", FUNCTIONS_NS, check=False)  # kept from an earlier run
    image = f"{release.values['image']['repository']}/agents:{release.values['image']['tag']}"
    http_agent(k, deploy_test_function(cluster.kubeconfig, FUNCTIONS_NS, image), name="api-checker")
    text = (REPO / "examples" / "workflow-deploy-check.yaml").read_text()
    manifest = json.dumps(yaml.safe_load(text)).replace(
        "https://shop.example.com/", f"{site_url}/shop/"
    )
    for run in ("first", "second"):
        name = k("create", "-f", "-", "-o", "jsonpath={.metadata.name}", input=manifest)
        print(f"$ kubectl -n {NS} create -f examples/workflow-deploy-check.yaml  # {name}")
        t0 = time.monotonic()
        st = wait_for(name, lambda n=name: (s if (s := k.json("get", "agentworkflow", n)  # type: ignore[misc]
                      .get("status", {})).get("phase") in ("Succeeded", "Failed") else None),
                      timeout=300)  # fmt: skip
        print(f"the {run} run {st['phase']} in {time.monotonic() - t0:.1f} s")
        for cmd in (["get", "agentworkflows"],
                    ["get", "agenttasks", "-l", f"agents.wallestars.io/workflow={name}"]):  # fmt: skip
            print(f"$ kubectl -n {NS} {' '.join(cmd)}")
            print(k(*cmd).rstrip() + "\n")
        visual = next(s for s in st["steps"] if s["name"] == "visual")
        if "task" in visual:
            data = k.json("get", "agenttask", visual["task"])["status"]["result"]["data"]
            print(
                f"visual regression against the first run's screenshot: {json.dumps(data['visual'])}\n"
            )
        else:
            print(f"visual regression: {visual['phase']} ({visual.get('message', '')})\n")


def console_access(cluster: localcluster.Cluster, release: helmlocal.Release, k: Kubectl) -> None:
    """Where the console is, and a token to sign in with: a ServiceAccount of the demo
    namespace with the edit role there (the console acts with it, and only with it)."""
    system = Kubectl(cluster.kubeconfig, release.namespace)
    system("rollout", "status", f"deployment/{release.name}-console", "--timeout=180s")
    ip = system.json("get", "service", f"{release.name}-console")["spec"]["clusterIP"]
    k.run("create", "serviceaccount", "demo-user", check=False)
    k.run("create", "rolebinding", "demo-user-edit", "--clusterrole=edit",
          f"--serviceaccount={NS}:demo-user", check=False)  # fmt: skip
    token = k("create", "token", "demo-user", "--duration=8h").strip()
    print(f"The console and its API are at http://{ip}/ (the Service, from this machine). A")
    print("browser keeps the sign-in cookie (Secure) on https or localhost only, so open it with")
    print(f"  kubectl -n {release.namespace} port-forward svc/{release.name}-console 8088:80")
    print(f"then http://localhost:8088/ui/ and sign in as {NS}:demo-user with this token (8 hours;")
    print(f"it may do what the edit role allows in {NS}):")
    print(f"CONSOLE_TOKEN={token}\n")


if __name__ == "__main__":
    sys.exit(main())
