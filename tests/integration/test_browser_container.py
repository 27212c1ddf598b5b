"""The browser agent's pod, as the operator makes it, really is confined on a real node:
in a container of the browser image, the settings of the Job's pod template hold (not
root, read-only root, no capabilities, seccomp, a large /dev/shm). Each check runs
beside a control pod with that one setting removed (in a `privileged` namespace, since
`restricted` would refuse it) that must come out differently, so a check that could not
see the setting would fail."""

from __future__ import annotations

import copy
import errno
import json
import subprocess
from collections.abc import Callable
from typing import Any

import helmlocal
import localcluster
import pytest
import yaml
from harness import REPO, Kubectl, run_pod_to_end
from realnode import images, node
from realnode.config import NODE_IP
from wallestars_operator.manifests import AGENT_UID, AttemptConfig, browser_job

from tests.conftest import make_namespace
from tests.egress_suite import Report, unreported
from tests.fixture_site import Canary
from tests.servers import Loop

pytestmark = pytest.mark.cluster

# What the container reports about itself, as JSON.
PROBE = r"""
import errno, json, os
out = {"uid": os.getuid()}
try:
    open("/probe", "w")
    out["root_write"] = "ok"
except OSError as e:
    out["root_write"] = errno.errorcode[e.errno]
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
for k in ("CapEff", "CapPrm", "CapBnd"):
    out[k] = int(status[k].strip(), 16)
out["seccomp"] = int(status["Seccomp"].strip())
v = os.statvfs("/dev/shm")
out["shm_bytes"] = v.f_blocks * v.f_frsize
import importlib.util
out["modules"] = {m: importlib.util.find_spec(m) is not None for m in (
    "wallestars_browser", "wallestars_sdk", "playwright", "kopf", "boto3", "lightkube",
    "wallestars_operator", "wallestars_webhooks")}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def browser_image(real_cluster: localcluster.Cluster) -> str:
    return images.ensure(node.layout_of(real_cluster.dir), ["browser-agent"])["browser-agent"]


def agent_pod(image: str, namespace: str, name: str) -> dict[str, Any]:
    """The pod of a browser attempt's Job, as the operator's manifests make it, running
    the probe instead of the agent (and without the key Secret it would mount)."""
    task = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": namespace, "uid": "0" * 8},
            "spec": {"agentRef": "br", "type": "screenshot", "payload": {}}}  # fmt: skip
    agent = {"metadata": {"name": "br"}, "spec": {"browser": {"image": image}}}
    job = browser_job(task, agent, 1, AttemptConfig(callback_base="http://unused:1"))
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    container["command"] = ["python", "-c", PROBE]
    container["imagePullPolicy"] = "Never"
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "key"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "key"]
    # The Job's labels too: the chart's browser NetworkPolicy selects pods by them.
    labels = job["spec"]["template"]["metadata"]["labels"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": spec}  # fmt: skip


def probe(k: Kubectl, manifest: dict[str, Any]) -> dict[str, Any]:
    phase, logs = run_pod_to_end(k, manifest)
    assert phase == "Succeeded", logs
    return dict(json.loads(logs.strip().splitlines()[-1]))


def container(pod: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = pod["spec"]["containers"][0]  # the pod's own, edited in place
    return c


def without_non_root(pod: dict[str, Any]) -> None:
    for ctx in (pod["spec"]["securityContext"], container(pod)["securityContext"]):
        ctx.pop("runAsNonRoot", None)
    pod["spec"]["securityContext"]["runAsUser"] = 0


def without_read_only_root(pod: dict[str, Any]) -> None:
    container(pod)["securityContext"]["readOnlyRootFilesystem"] = False


def without_capability_drop(pod: dict[str, Any]) -> None:
    container(pod)["securityContext"].pop("capabilities")


def without_seccomp(pod: dict[str, Any]) -> None:
    for ctx in (pod["spec"]["securityContext"], container(pod)["securityContext"]):
        ctx["seccompProfile"] = {"type": "Unconfined"}


def without_shm_volume(pod: dict[str, Any]) -> None:
    c = container(pod)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "dshm"]
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "dshm"]


def test_the_agent_container_is_confined_and_each_setting_is_what_confines_it(
    real_cluster: localcluster.Cluster, real_namespace: str, browser_image: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    got = probe(k, agent_pod(browser_image, real_namespace, "confined"))
    assert got["uid"] == AGENT_UID != 0
    assert got["root_write"] == errno.errorcode[errno.EROFS]
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == 0
    assert got["seccomp"] == 2  # a filter is applied (RuntimeDefault)
    assert got["shm_bytes"] >= 1024**3  # the 1Gi memory emptyDir, not the runtime's 64 MiB
    # The image carries the agent and its SDK, and nothing of the operator's side.
    present = {m for m, there in got["modules"].items() if there}
    assert present == {"wallestars_browser", "wallestars_sdk", "playwright"}, got["modules"]

    privileged = make_namespace(real_cluster.kubeconfig, "confinement-controls", "privileged")
    try:
        kp = Kubectl(real_cluster.kubeconfig, privileged)
        controls: list[tuple[str, Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], bool]]] = [
            ("root", without_non_root, lambda g: g["uid"] == 0),
            ("rw-root", without_read_only_root,
             lambda g: g["root_write"] == errno.errorcode[errno.EACCES]),
            ("caps", without_capability_drop, lambda g: g["CapBnd"] != 0),
            ("seccomp", without_seccomp, lambda g: g["seccomp"] == 0),
            ("shm", without_shm_volume, lambda g: g["shm_bytes"] == 64 * 1024**2),
        ]  # fmt: skip
        for name, remove, differs in controls:
            pod = copy.deepcopy(agent_pod(browser_image, privileged, f"control-{name}"))
            remove(pod)
            control = probe(kp, pod)
            assert differs(control), (name, control)
    finally:
        Kubectl(real_cluster.kubeconfig).run("delete", "namespace", privileged, "--wait=false",
                                             check=False)  # fmt: skip


def test_the_images_self_test_passes_in_its_container(
    real_cluster: localcluster.Cluster, real_namespace: str, browser_image: str
) -> None:
    """The image's entry point with --self-test (the Agent health probe's command) in the
    confined pod: Chromium starts under the restricted profile, through the egress proxy,
    and the proxy refuses the metadata address."""
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    pod = agent_pod(browser_image, real_namespace, "self-test")
    container(pod)["command"] = ["python", "-m", "wallestars_browser", "--self-test"]
    phase, logs = run_pod_to_end(k, pod, timeout=180)
    assert phase == "Succeeded", logs
    assert "ok   metadata address refused" in logs


# The suite's modules, mounted into the pod as a package (tests/egress_suite.py).
SUITE = ("__init__.py", "servers.py", "fixture_site.py", "fake_dns.py", "egress_suite.py")


def browser_policy(namespace: str, allowed: tuple[str, int]) -> dict[str, Any]:
    """The chart's NetworkPolicy for browser pods in ``namespace``, rendered by helm, with
    one more place they may reach (networkPolicies.browserEgress)."""
    rule = {"to": [{"ipBlock": {"cidr": f"{allowed[0]}/32"}}],
            "ports": [{"port": allowed[1], "protocol": "TCP"}]}  # fmt: skip
    values = {"networkPolicies": {"browserNamespaces": [namespace], "browserEgress": [rule]}}
    out = subprocess.run([str(helmlocal.helm_bin()), "template", "wallestars", str(helmlocal.CHART),
                          "-n", "wallestars-system", "--show-only", "templates/networkpolicies.yaml",
                          "--set-json", f"networkPolicies={json.dumps(values['networkPolicies'])}"],
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    (policy,) = [d for d in yaml.safe_load_all(out)
                 if d and d["metadata"].get("namespace") == namespace]  # fmt: skip
    return dict(policy)


def test_the_hostile_address_suite_passes_inside_the_browser_container(
    real_cluster: localcluster.Cluster, real_namespace: str, browser_image: str
) -> None:
    """tests/egress_suite.py in a pod of the browser image, confined as the operator's Job
    pod is and selected by the chart's browser NetworkPolicy: every hostile URL and page
    trick (at canaries on the pod's loopback, as on the host) and URLs at canaries on the
    node's address is refused by the egress proxy and reaches nothing. Behind it, the
    policy: a plain connection to the node's address is stopped, beside a control to the
    one address and port the policy allows, which connects."""
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    loop = Loop()
    try:
        allowed = loop.run(Canary(NODE_IP).start())  # the policy allows it; the proxy not
        node_canary = loop.run(Canary(NODE_IP).start())  # neither allows it
        k.apply(browser_policy(real_namespace, (NODE_IP, allowed.port)))
        k.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "egress-suite"},
                 "data": {f: (REPO / "tests" / f).read_text() for f in SUITE}})  # fmt: skip
        outside = {
            "node-allowed-by-policy": allowed.url,
            "node-other-port": node_canary.url,
            "dns-node": f"http://node.test:{node_canary.port}",
        }
        pod = agent_pod(browser_image, real_namespace, "egress-suite")
        spec, c = pod["spec"], container(pod)
        c["command"] = ["python", "-m", "tests.egress_suite",
                        "--outside", json.dumps(outside),
                        "--names", json.dumps({"node.test": [[NODE_IP]]}),
                        "--raw", json.dumps([f"{NODE_IP}:{allowed.port}",
                                             f"{NODE_IP}:{node_canary.port}"])]  # fmt: skip
        c["env"] = [
            *c.get("env", []),
            {"name": "PYTHONPATH", "value": "/opt/suite:/opt/wallestars"},
        ]
        c["volumeMounts"].append(
            {"name": "suite", "mountPath": "/opt/suite/tests", "readOnly": True}
        )
        spec["volumes"].append({"name": "suite", "configMap": {"name": "egress-suite"}})
        phase, logs = run_pod_to_end(k, pod, timeout=300)
        assert phase == "Succeeded", logs[-3000:]
        report = Report.from_json(logs.strip().splitlines()[-1])
    finally:
        loop.stop()
    assert len(report.direct) + len(report.tricks) >= 63
    assert report.hits == {}, f"a canary in the pod was reached: {report.hits}"
    missing = unreported(report)
    assert missing == [], (
        f"not reported as blocked: {missing}\nblocked: {report.blocked_urls}\n"
        f"denied: {report.denied_hosts}"
    )
    assert report.steps["site-still-reachable"]["status"] == "passed", report.steps
    # The browser reached neither node canary; the plain connections show the walls: the
    # policy's allowed address connects (so the proxy alone stopped the browser there),
    # the other, where a canary listens, is stopped by the NetworkPolicy (kube-router
    # rejects it: refused, or dropped: a timeout) and never arrives.
    assert report.extra[f"{NODE_IP}:{allowed.port}"] == "connected", report.extra
    assert report.extra[f"{NODE_IP}:{node_canary.port}"] in ("ConnectionRefusedError", "timeout")
    assert allowed.hits == [b"<connect>"], allowed.hits  # the plain connection, no request
    assert node_canary.hits == [], node_canary.hits
