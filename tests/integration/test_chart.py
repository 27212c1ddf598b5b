"""The Helm chart installed for real: `helm install` with its production values on a
control plane of its own with a real node (hack/realnode), the operator and webhook
pods in containers of our images (2 replicas each, PVC-backed artifacts, NetworkPolicies
enforced) under their own service accounts, a browser and an `http` AgentTask end to end
(the browser in a container of the browser image, calling back through the webhook
Service's DNS name), least privilege asked of the API server, `helm test`, every
dashboard and alert query evaluated by a real Prometheus scraping every replica, `helm
upgrade` to a new image tag with a task in flight, and `helm uninstall`.

The tests share one installation and run in file order (upgrade and uninstall last).
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helmlocal
import localcluster
import pytest
import yaml
from harness import (
    Kubectl,
    audit_events,
    credential_secret,
    deploy_test_function,
    download,
    free_port,
    http_agent,
    phase_is,
    reader_token,
    start_fixture_site,
    status,
    task,
    wait_for,
)
from realnode import node
from realnode.config import NODE_IP

from tests import prometheus

TASKS_NS = "chart-tasks"
FUNCTIONS_NS = "chart-functions"
SYSTEM = "wallestars-system"


@pytest.fixture(scope="module")
def chart_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.Cluster]:
    """A control plane of its own on the real node: the chart installs cluster-wide
    objects (CRDs, the admission policy, ClusterRoles) that other tests apply by hand."""
    state = tmp_path_factory.mktemp("chart-cluster")
    c = localcluster.up(state, ports=localcluster.Ports.free(), audit=True, real_node=True)
    try:
        yield c
    finally:
        localcluster.down(state)


@pytest.fixture(scope="module")
def release(chart_cluster: localcluster.Cluster, site: int) -> helmlocal.Release:
    return helmlocal.install(
        chart_cluster,
        browser_namespaces=(TASKS_NS,),
        reachable=((NODE_IP, site),),
        function_namespaces=(FUNCTIONS_NS,),
    )


@pytest.fixture(scope="module")
def k(chart_cluster: localcluster.Cluster, release: helmlocal.Release) -> Kubectl:
    return Kubectl(chart_cluster.kubeconfig, TASKS_NS)


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    """The fixture site on the node's address, where browser pods can reach it."""
    port = free_port()
    proc = start_fixture_site(port, NODE_IP)
    wait_for("the fixture site", lambda: _listening(NODE_IP, port))
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def function(chart_cluster: localcluster.Cluster, release: helmlocal.Release) -> str:
    """The test function as a pod in a namespace of its own, which the release lets the
    operator call and lets call back (networkPolicies.callbackNamespaces)."""
    Kubectl(chart_cluster.kubeconfig)("create", "namespace", FUNCTIONS_NS)
    image = f"{release.values['image']['repository']}/agents:{release.values['image']['tag']}"
    return deploy_test_function(chart_cluster.kubeconfig, FUNCTIONS_NS, image)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def pods(k: Kubectl, component: str) -> list[dict[str, Any]]:
    items = Kubectl(k.kubeconfig, SYSTEM).json(
        "get", "pods", "-l", f"app.kubernetes.io/component={component}"
    )["items"]
    return list(items)


# --- install and run -------------------------------------------------------------------


def test_install_runs_both_services_from_the_chart(k: Kubectl, release: helmlocal.Release) -> None:
    ops, whs = pods(k, "operator"), pods(k, "webhooks")
    assert len(ops) == 2 and len(whs) == 2  # the chart's production replicas
    for component, ps in (("operator", ops), ("webhooks", whs)):
        for p in ps:
            assert p["spec"]["serviceAccountName"] == f"wallestars-{component}"
            assert p["status"]["phase"] == "Running"
            ready = {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"]
            assert ready == "True", p["status"]
            (c,) = p["spec"]["containers"]
            assert c["command"] == [f"wallestars-{component}"]
            assert (
                c["image"]
                == release.values["image"]["repository"]
                + "/agents:"
                + release.values["image"]["tag"]
            )
            (state,) = p["status"]["containerStatuses"]
            assert state["imageID"] and state["containerID"].startswith("containerd://")
    # The artifacts are on a PersistentVolumeClaim, bound by the node's provisioner.
    (pvc,) = Kubectl(k.kubeconfig, SYSTEM).json("get", "pvc")["items"]
    assert pvc["status"]["phase"] == "Bound"
    ns = Kubectl(k.kubeconfig).json("get", "namespace", SYSTEM)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    crds = Kubectl(k.kubeconfig)("get", "crd", "-o", "name")
    assert "agenttasks.agents.wallestars.io" in crds and "agents.agents.wallestars.io" in crds


def test_browser_and_http_tasks_succeed_through_the_chart(
    k: Kubectl, release: helmlocal.Release, site: int, function: str
) -> None:
    # No image or command: the operator's default, the browser image the chart names.
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent",
             "metadata": {"name": "chromium"},
             "spec": {"type": "browser", "capabilities": ["screenshot"], "concurrency": 2,
                      "browser": {"network": {"allowPrivateAddresses": [f"{NODE_IP}:{site}"]}}}})  # fmt: skip
    http_agent(k, function, name="fn")
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "shot"},
             "spec": {"agentRef": "chromium", "type": "screenshot",
                      "payload": {"url": f"http://{NODE_IP}:{site}/", "fullPage": True}}})  # fmt: skip
    task(k, "call", "fn")
    for name in ("shot", "call"):

        def done(n: str = name) -> Any:
            return phase_is(k, n, "Succeeded", "Failed", "TimedOut")

        wait_for(f"{name} to finish", done, timeout=180)
        assert status(k, name)["phase"] == "Succeeded", status(k, name)
    # The screenshot ran in a container of the browser image, on the node.
    (job,) = k.json("get", "jobs", "-l", "agents.wallestars.io/task=shot")["items"]
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["image"]
        == release.values["operator"]["browserImage"]
    )
    # The screenshot is served back by the chart's webhook service to a reader of the task.
    art = status(k, "shot")["result"]["artifacts"][0]
    png = download(release.webhooks_url, art["uri"], reader_token(k), release.tls_context())
    # It called back over HTTPS, verifying the service by the CA the operator gave it.
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WALLESTARS_CALLBACK_URL"].startswith(
        f"https://{release.name}-webhooks.{SYSTEM}.svc:"
    )
    ca = Kubectl(k.kubeconfig, SYSTEM).json("get", "secret", f"{release.name}-webhooks-tls")[
        "data"
    ]["ca.crt"]
    assert env["WALLESTARS_CALLBACK_CA"] == base64.b64decode(ca).decode()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) == art["size"]


def test_a_workflow_and_a_schedule_run_through_the_chart(
    k: Kubectl, release: helmlocal.Release, function: str
) -> None:
    """The chart's operator reconciles AgentWorkflows and AgentSchedules too (its RBAC
    lets it create their tasks), and their metrics feed the dashboards' workflow panels."""
    http_agent(k, function, name="fn")
    step = {"agentRef": "fn", "type": "custom", "payload": {"data": {"out": "x"}}}
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow",
             "metadata": {"name": "flow"},
             "spec": {"steps": [{"name": "a", "template": step},
                                {"name": "b", "dependsOn": ["a"], "template": {**step, "payload": {
                                    "data": {"out": "{{ steps.a.result.data.out }}-b"}}}}],
                      "outputs": {"b": "{{ steps.b.result.data.out }}"}}})  # fmt: skip
    schedule: dict[str, Any] = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentSchedule",
                "metadata": {"name": "tick"},
                "spec": {"schedule": "@every 5s", "concurrencyPolicy": "Forbid",
                         "taskTemplate": {"spec": step}}}  # fmt: skip
    k.apply(schedule)

    def flow_done() -> Any:
        st = k.json("get", "agentworkflow", "flow").get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    st = wait_for("the workflow to finish", flow_done, timeout=120)
    assert st["phase"] == "Succeeded" and st["outputs"] == {"b": "x-b"}, st
    wait_for("a scheduled run to succeed", lambda: any(
        (t.get("status") or {}).get("phase") == "Succeeded"
        for t in k.json("get", "agenttasks", "-l", "agents.wallestars.io/schedule=tick")["items"]),
        timeout=60)  # fmt: skip
    k.apply(schedule | {"spec": {**schedule["spec"], "suspend": True}})  # no more runs after


def test_each_service_wrote_as_its_own_service_account(
    k: Kubectl, chart_cluster: localcluster.Cluster
) -> None:
    writers = {
        (ev["objectRef"].get("name"), ev["objectRef"].get("subresource"), ev["user"]["username"])
        for ev in audit_events(chart_cluster)
        if (ev.get("objectRef") or {}).get("resource") == "agenttasks" and ev["verb"] == "patch"
    }
    for name in ("shot", "call"):
        assert (name, "status", f"system:serviceaccount:{SYSTEM}:wallestars-operator") in writers
        assert (name, "status", f"system:serviceaccount:{SYSTEM}:wallestars-webhooks") in writers
    jobs = k.json("get", "jobs")["items"]
    attempts = [j for j in jobs if "agents.wallestars.io/task" in j["metadata"]["labels"]]
    assert attempts and all(
        j["metadata"]["labels"]["agents.wallestars.io/task"] == "shot" for j in attempts
    )
    # The only other Jobs: the browser Agent's health probes, the operator's too.
    probes = {j["metadata"]["labels"].get("agents.wallestars.io/probe") for j in jobs} - {None}
    assert probes == {"chromium"} and len(attempts) + len(
        [j for j in jobs if "agents.wallestars.io/probe" in j["metadata"]["labels"]]
    ) == len(jobs)


# --- least privilege -------------------------------------------------------------------


def can(k: Kubectl, sa: str, *args: str) -> bool:
    out = k.run("auth", "can-i", f"--as=system:serviceaccount:{sa}", *args, check=False)
    return out.stdout.strip() == "yes"


def test_least_privilege_as_the_api_server_sees_it(k: Kubectl) -> None:
    wh, op, pod = (
        f"{SYSTEM}:wallestars-webhooks",
        f"{SYSTEM}:wallestars-operator",
        f"{TASKS_NS}:default",
    )
    assert can(k, wh, "patch", "agenttasks.agents.wallestars.io", "--subresource=status")
    assert can(k, wh, "create", "tokenreviews.authentication.k8s.io")
    assert can(k, wh, "create", "events.events.k8s.io")  # the transitions it writes
    for refused in (("create", "jobs"), ("get", "secrets"), ("list", "secrets"),
                    ("patch", "agenttasks.agents.wallestars.io"), ("update", "agenttasks.agents.wallestars.io"),
                    ("delete", "agenttasks.agents.wallestars.io"), ("create", "pods")):  # fmt: skip
        assert not can(k, wh, *refused), f"the webhook service may {refused}"
    # Browser-agent pods run as their namespace's default account, which may do nothing.
    for verb, res in (("get", "secrets"), ("list", "pods"), ("get", "agenttasks.agents.wallestars.io"),
                      ("create", "jobs"), ("list", "configmaps"), ("create", "events")):  # fmt: skip
        assert not can(k, pod, verb, res), f"browser-agent pods may {verb} {res}"
    # The operator's own grants: concrete verbs on concrete resources, no wildcard.
    rules = k("auth", "can-i", "--list", f"--as=system:serviceaccount:{op}")
    assert rules.strip()
    for line in rules.splitlines()[1:]:
        resources, *_, verbs = re.split(r"\s{2,}", line.strip())
        assert resources != "*.*" and "[*]" not in verbs, line
    assert can(k, op, "create", "jobs") and not can(k, op, "list", "secrets")
    # It may patch AgentTasks (to cancel a workflow's steps and a schedule's runs), and
    # the chart's admission policy narrows that to spec.cancel of what it created.
    assert can(k, op, "patch", "agenttasks.agents.wallestars.io")
    as_op = ["--as", f"system:serviceaccount:{op}", "--dry-run=server"]
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "users", "namespace": TASKS_NS},
             "spec": {"agentRef": "nobody", "type": "custom", "payload": {}}})  # fmt: skip
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "a-step", "namespace": TASKS_NS,
                          "labels": {"agents.wallestars.io/workflow": "w"}},
             "spec": {"agentRef": "nobody", "type": "custom", "payload": {}}})  # fmt: skip
    tasks = Kubectl(k.kubeconfig, TASKS_NS)

    def patch(name: str, spec: dict[str, Any]) -> str:
        out = tasks.run("patch", "agenttask", name, "--type=merge", "-p", json.dumps({"spec": spec}),
                        *as_op, check=False)  # fmt: skip
        return "ok" if out.returncode == 0 else out.stderr

    assert patch("a-step", {"cancel": True}) == "ok"
    assert "may only cancel what it created" in patch("users", {"cancel": True})
    assert "nothing in the spec but spec.cancel" in patch("a-step", {"priority": 9})
    tasks("delete", "agenttask", "users", "a-step")


def test_every_rendered_manifest_is_valid_for_the_api_server(
    k: Kubectl, release: helmlocal.Release
) -> None:
    """Each object the chart renders with every option on, sent to the API server as a
    dry run: its OpenAPI schemas (strict: an unknown field is an error), the CRDs' schemas,
    admission and Pod Security `restricted` all judge it. The prometheus-operator kinds
    have no CRDs here; tests/unit/test_chart.py decodes those into their Go types."""
    admin = Kubectl(k.kubeconfig)
    admin.run("create", "namespace", "validate", check=False)
    admin(
        "label",
        "--overwrite",
        "namespace",
        "validate",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    out = release.helm("template", "check", str(helmlocal.CHART), "-n", "validate",
                       "--set", "networkPolicies.browserNamespaces={chart-tasks}",
                       "--set", "networkPolicies.callbackNamespaces={functions}",
                       "--set-string", "networkPolicies.metricsFromNamespaceLabels.monitoring=true",
                       "--set", "artifacts.persistence.storageClassName=standard",
                       "--set", "apiPriority.enabled=true")  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "NetworkPolicy", "ClusterRole", "PersistentVolumeClaim",
            "ConfigMap", "Secret", "ValidatingAdmissionPolicy", "Pod", "FlowSchema",
            "PriorityLevelConfiguration"} <= kinds  # fmt: skip
    manifest = Path(k.kubeconfig).parent / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    res = admin.run(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(manifest), check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("(server dry run)") == len(docs)


# --- NetworkPolicies, enforced by the node's kube-router --------------------------------

# Connects to argv[1]:argv[2] with a 3 s timeout: exit 0 if connected.
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"


def prober(
    kubeconfig: Path, namespace: str, name: str, image: str, labels: dict[str, str]
) -> Kubectl:
    """A long-running restricted pod to make connection attempts from (`kubectl exec`),
    itself listening on 8080 so that connections to it fail only when a policy says so."""
    kn = Kubectl(kubeconfig, namespace)
    kn.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "probe", "image": image, "imagePullPolicy": "Never",
                            "command": ["python", "-m", "http.server", "8080"],
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}}],
        },
    })  # fmt: skip
    kn("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
    return kn


def connects(kn: Kubectl, pod: str, host: str, port: int, container: str = "") -> bool:
    where = ["-c", container] if container else []
    out = kn.run("exec", pod, *where, "--", "python", "-c", CONNECT, host, str(port), check=False)
    return out.returncode == 0


def test_network_policies_hold_with_a_control_for_each(
    k: Kubectl, release: helmlocal.Release, chart_cluster: localcluster.Cluster, function: str
) -> None:
    """Each check is a real connection attempt that must fail, beside one that must
    succeed from the same place, so a check cannot pass because nothing answers."""
    image = f"{release.values['image']['repository']}/agents:{release.values['image']['tag']}"
    system = Kubectl(k.kubeconfig, SYSTEM)
    webhooks = system.json("get", "service", "wallestars-webhooks")["spec"]["clusterIP"]
    operator_ip = release.pod_ips("operator")[0]
    fn_ip = Kubectl(k.kubeconfig, FUNCTIONS_NS).json("get", "pod", "test-function")["status"][
        "podIP"
    ]
    browser_labels = {"app.kubernetes.io/managed-by": "wallestars-operator",
                      "app.kubernetes.io/component": "browser-agent"}  # fmt: skip
    browser = prober(k.kubeconfig, TASKS_NS, "browser-probe", image, browser_labels)
    Kubectl(k.kubeconfig)("create", "namespace", "outsider")
    Kubectl(k.kubeconfig)(
        "label", "namespace", "outsider", "pod-security.kubernetes.io/enforce=restricted"
    )
    outsider = prober(k.kubeconfig, "outsider", "outsider-probe", image, {"app": "outsider"})
    # Controls: a browser pod reaches the webhook service (a new pod's address reaches
    # kube-router's sets a moment after it starts, hence the wait), and the outsider
    # reaches the in-cluster function (no policy selects that one).
    wait_for("the browser pod to reach the webhook service",
             lambda: connects(browser, "browser-probe", webhooks, 8080), timeout=30)  # fmt: skip
    wait_for("the outsider to reach the function",
             lambda: connects(outsider, "outsider-probe", fn_ip, 8080), timeout=30)  # fmt: skip
    wait_for("the function to reach the outsider (nothing blocks that)",
             lambda: connects(Kubectl(k.kubeconfig, FUNCTIONS_NS), "test-function",
                              outsider.json("get", "pod", "outsider-probe")["status"]["podIP"], 8080),
             timeout=30)  # fmt: skip
    # A namespace the chart does not allow cannot call back.
    assert not connects(outsider, "outsider-probe", webhooks, 8080)
    # A browser pod reaches neither the API server, nor the operator's metrics, nor
    # another namespace's pods.
    api_host, api_port = chart_cluster.host, chart_cluster.ports.apiserver
    assert not connects(browser, "browser-probe", "10.0.0.1", 443)
    assert not connects(browser, "browser-probe", api_host, api_port)
    assert not connects(browser, "browser-probe", operator_ip, 9090)
    assert not connects(browser, "browser-probe", fn_ip, 8080)
    outsider_ip = outsider.json("get", "pod", "outsider-probe")["status"]["podIP"]
    assert not connects(browser, "browser-probe", outsider_ip, 8080)
    # The operator reaches what its egress policy allows (the API server, the function's
    # namespace) and nothing else (the outsider's pod, the webhook service).
    op = system.json("get", "pods", "-l", "app.kubernetes.io/component=operator")["items"][0]
    op = op["metadata"]["name"]
    assert connects(system, op, api_host, api_port)
    assert connects(system, op, fn_ip, 8080)
    assert not connects(system, op, outsider_ip, 8080)
    assert not connects(system, op, webhooks, 8080)


def test_helm_test_hook_passes(release: helmlocal.Release) -> None:
    out = release.helm("test", release.name, "--timeout", "120s", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Phase:          Succeeded" in out.stdout


# --- dashboards and alerts against a real Prometheus -----------------------------------


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables, as the panels resolve them for a 30-second window."""
    return (expr.replace("$__rate_interval", "30s").replace("$__range", "5m")
            .replace('"$agent"', '".*"'))  # fmt: skip


def chart_rules(release: helmlocal.Release) -> list[dict[str, Any]]:
    out = release.helm("template", release.name, str(helmlocal.CHART), "--set", "metrics.prometheusRule.enabled=true",
                       "--show-only", "templates/monitoring.yaml")  # fmt: skip
    (rule,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    return list(rule["spec"]["groups"])


def test_a_notification_to_a_private_address_is_refused_in_the_operators_pod(k: Kubectl) -> None:
    """The chart's operator sends notifications through the smokescreen in its image: a
    receiver at a private address (not allowed by notifications.allowPrivate*) is refused
    before any connection, and the refusal is recorded in the task's status."""
    credential_secret(k, "hook", secret="whsec_" + base64.b64encode(b"k" * 32).decode())
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "notified"},
             "spec": {"agentRef": "nobody", "type": "custom", "payload": {},
                      "notify": [{"url": "https://10.255.255.1/hook", "secretRef": {"name": "hook"},
                                  "phases": ["Queued"]}]}})  # fmt: skip

    def record() -> Any:
        recs = (k.json("get", "agenttask", "notified").get("status") or {}).get(
            "notifications"
        ) or []
        return next((r for r in recs if r.get("gaveUpTime")), None)

    rec = wait_for("the notification given up", record, timeout=90)
    assert rec["lastStatus"] == "refused" and "refused by the egress policy" in rec["lastError"], (
        rec
    )
    assert "10.255.255.1" in rec["lastError"]


def test_dashboards_and_alerts_evaluate_against_prometheus(
    release: helmlocal.Release, tmp_path: Path
) -> None:
    # The job name of the operator's metrics is the one a ServiceMonitor gives it: its Service.
    jobs = {
        "wallestars-operator-metrics": [f"{ip}:9090" for ip in release.pod_ips("operator")],
        # The webhook service's metrics are on its plain ops port (9091) beside HTTPS.
        "wallestars-webhooks": [f"{ip}:9091" for ip in release.pod_ips("webhooks")],
    }
    groups = chart_rules(release)
    prom = prometheus.start(tmp_path / "prometheus", jobs, groups)
    try:
        wait_for("two scrapes of every series", lambda: prom.query("count_over_time(up[30s])")["data"]["result"]
                 and all(float(r["value"][1]) >= 3 for r in prom.query("count_over_time(up[30s])")["data"]["result"]),
                 timeout=30)  # fmt: skip
        empty = []
        for path in sorted((helmlocal.CHART / "files" / "dashboards").glob("*.json")):
            for p in json.loads(path.read_text())["panels"]:
                if p["title"].startswith("Console:"):
                    continue  # not enabled in this release: test_console_chart.py checks these
                for t in p["targets"]:
                    ans = prom.query(grafana_to_promql(t["expr"]))
                    assert ans["status"] == "success", f"{path.name} {p['title']}: {ans}"
                    if not ans["data"]["result"]:
                        empty.append(f"{path.name}: {p['title']} [{t['refId']}]")
        assert not empty, f"panels without data after a run: {empty}"
        # The agent variable lists both agents.
        agents = prom.api("label/agent/values", **{"match[]": "wallestars_agent_ready"})["data"]
        assert set(agents) >= {"chromium", "fn"}

        def rules_evaluated() -> bool:
            rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
            # A rule not yet evaluated reports Go's zero time.
            return len(rules) == 8 and all(
                not r.get("lastEvaluation", "0001").startswith("0001") for r in rules
            )

        wait_for("every alert rule evaluated", rules_evaluated, timeout=30)
        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        assert all(r["health"] == "ok" for r in rules), [
            (r["name"], r.get("lastError")) for r in rules
        ]
        # Nothing is wrong after this run, so nothing fires: in particular the operator is
        # seen up under the job name the alert expects, and both agents are Ready. (An
        # agent's first seconds, before its health probe passed, may make the availability
        # SLO alert pending: its `for` is 30 minutes.)
        firing = [
            a["labels"]["alertname"]
            for a in prom.api("alerts")["data"]["alerts"]
            if a["state"] == "firing"
        ]
        assert firing == []
        down = next(r for r in rules if r["name"] == "WallestarsOperatorDown")
        assert prom.query(down["query"])["data"]["result"] == []
        assert prom.query(down["query"].replace("operator-metrics", "nothing-here"))["data"][
            "result"
        ]
    finally:
        prom.stop()


# --- upgrade and uninstall -------------------------------------------------------------


def test_upgrade_keeps_the_signing_key_and_running_tasks(
    k: Kubectl, release: helmlocal.Release
) -> None:
    system = Kubectl(k.kubeconfig, SYSTEM)
    key_before = system.json("get", "secret", "wallestars-master-key")["data"]["keys"]
    tls_before = system.json("get", "secret", "wallestars-webhooks-tls")["data"]
    pods_before = {p["metadata"]["uid"] for p in pods(k, "operator") + pods(k, "webhooks")}
    task(k, "slow", "fn", behaviour="slow")  # the function calls back after 8 s
    wait_for("slow to be dispatched", lambda: phase_is(k, "slow", "Dispatched"), timeout=30)
    # A new image tag rolls both Deployments. The tag is the same build under a second
    # name (a rebuild with no change would get the same content-derived tag).
    image = release.values["image"]
    new_tag = image["tag"] + "-next"
    lay = node.layout_of(k.kubeconfig.parent)
    node.ctr(lay, "images", "tag", "--force", f"{image['repository']}/agents:{image['tag']}",
             f"{image['repository']}/agents:{new_tag}")  # fmt: skip
    release.upgrade("--set", f"image.tag={new_tag}")
    assert system.json("get", "secret", "wallestars-master-key")["data"]["keys"] == key_before
    assert base64.b64decode(key_before).startswith(b"whsec_")
    # The chart's CA and serving certificate are kept too: agents in flight trust that CA.
    assert system.json("get", "secret", "wallestars-webhooks-tls")["data"] == tls_before
    pods_after = {p["metadata"]["uid"] for p in pods(k, "operator") + pods(k, "webhooks")}
    assert pods_after and not pods_after & pods_before, "the upgrade did not restart the services"
    images_after = {
        p["spec"]["containers"][0]["image"] for p in pods(k, "operator") + pods(k, "webhooks")
    }
    assert images_after == {f"{image['repository']}/agents:{new_tag}"}
    # Signed with the key of before the upgrade, the callback is accepted after it.
    wait_for(
        "slow to succeed",
        lambda: phase_is(k, "slow", "Succeeded", "Failed", "TimedOut"),
        timeout=90,
    )
    st = status(k, "slow")
    assert st["phase"] == "Succeeded" and st["attempt"] == 1, st
    assert phase_is(k, "shot", "Succeeded") and phase_is(k, "call", "Succeeded")


def test_mutual_tls_browser_jobs_and_functions_present_their_attempts_certificates(
    k: Kubectl, release: helmlocal.Release, site: int
) -> None:
    """webhooks.tls.mutual on an installed release: every callback now needs its
    attempt's client certificate, and both kinds of agent have one."""
    release.upgrade("--set", "webhooks.tls.mutual=true")
    system = Kubectl(k.kubeconfig, SYSTEM)
    assert system.json("get", "secret", "wallestars-client-ca")["type"] == "kubernetes.io/tls"
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "shot-mtls"},
             "spec": {"agentRef": "chromium", "type": "screenshot",
                      "payload": {"url": f"http://{NODE_IP}:{site}/"}}})  # fmt: skip
    task(k, "call-mtls", "fn")
    for name in ("shot-mtls", "call-mtls"):

        def done(n: str = name) -> Any:
            return phase_is(k, n, "Succeeded", "Failed", "TimedOut")

        wait_for(f"{name} to finish", done, timeout=180)
        assert status(k, name)["phase"] == "Succeeded", status(k, name)
    # The browser attempt's certificate: in its key Secret, named for that attempt only.
    from cryptography import x509

    (secret,) = k.json("get", "secrets", "-l", "agents.wallestars.io/task=shot-mtls")["items"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    uid = k.json("get", "agenttask", "shot-mtls")["metadata"]["uid"]
    assert cert.subject.rfc4514_string() == f"CN={uid}/1"
    client_ca = base64.b64decode(
        system.json("get", "secret", "wallestars-client-ca")["data"]["tls.crt"]
    )
    assert cert.issuer == x509.load_pem_x509_certificate(client_ca).subject


def test_uninstall_leaves_no_service_pods_and_keeps_crds_tasks_and_key(
    k: Kubectl, release: helmlocal.Release
) -> None:
    release.uninstall()
    wait_for("the operator and webhook pods to go",
             lambda: not pods(k, "operator") and not pods(k, "webhooks"), timeout=90)  # fmt: skip
    system_ns = Kubectl(k.kubeconfig, SYSTEM)
    assert system_ns.run("get", "service", "wallestars-webhooks", check=False).returncode != 0
    # Kept on purpose (the chart's README says why): the CRDs (Helm never deletes them),
    # every AgentTask with its results, and the signing key of tasks still in flight.
    assert {t["metadata"]["name"] for t in k.json("get", "agenttasks")["items"]} >= {
        "shot",
        "call",
        "slow",
    }
    system = Kubectl(k.kubeconfig, SYSTEM)
    assert system.run("get", "secret", "wallestars-master-key", check=False).returncode == 0
    assert system.json("get", "deployments,services,serviceaccounts", "-l",
                       "app.kubernetes.io/instance=wallestars")["items"] == []  # fmt: skip
    assert not Kubectl(k.kubeconfig).json(
        "get", "clusterroles", "-l", "app.kubernetes.io/instance=wallestars"
    )["items"]
