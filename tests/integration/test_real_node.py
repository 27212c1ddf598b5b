"""The real node (hack/realnode): pods run in containers under containerd, reach each
other through Services and cluster DNS, bind PVCs, obey NetworkPolicies, and cannot send
a packet off the machine."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import localcluster
import pytest
from harness import Kubectl, run_pod_to_end, wait_for
from realnode import host, images, node
from realnode.config import NODE_IP

from tests.conftest import make_namespace

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def busybox(real_cluster: localcluster.Cluster) -> str:
    """Debian's static busybox as an image (the node's storage helper; built at node start).
    Its static glibc cannot resolve names (wget crashes in getaddrinfo): clients that
    look up names run Python from our service image instead."""
    return images.build_busybox()


@pytest.fixture(scope="module")
def python_image(real_cluster: localcluster.Cluster) -> str:
    """The service image (operator and webhook service), for its Python."""
    return images.ensure(node.layout_of(real_cluster.dir), ["agents"])["agents"]


# Fetches argv[1] with a 3 s timeout and prints the body; fails on any error.
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"


def pod(name: str, image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    """A pod that passes Pod Security `restricted`, running ``command`` once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    **extra,
                }
            ],
        },
    }


def serve(k: Kubectl, name: str, image: str) -> str:
    """A busybox HTTP server pod and its Service; returns the Service's DNS name."""
    k.apply(pod(name, image, ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]))
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    k("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
    return f"{name}.{k.namespace}.svc.cluster.local"


def fetch(k: Kubectl, name: str, image: str, url: str) -> tuple[str, str]:
    """A pod that fetches ``url`` (3 s timeout) with Python; (phase, output)."""
    return run_pod_to_end(k, pod(name, image, ["python", "-c", FETCH, url]))


def test_node_is_ready_and_its_runtime_is_containerd(real_cluster: localcluster.Cluster) -> None:
    k = Kubectl(real_cluster.kubeconfig)
    node = k.json("get", "node", localcluster.NODE_NAME)
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    assert info["kubeletVersion"] == k.json("version")["serverVersion"]["gitVersion"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP


def test_a_pod_runs_in_its_own_container_as_its_user(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    script = "id -u; cat /proc/1/cgroup | grep memory; readlink /proc/self/ns/net; hostname"
    phase, out = run_pod_to_end(k, pod("who", busybox, ["/bin/busybox", "sh", "-c", script]))
    assert phase == "Succeeded", out
    uid, cgroup, netns, hostname = out.split()
    assert uid == "65532"
    assert "kubepods" in cgroup  # the kubelet's cgroup for the pod, not the host's
    assert netns != subprocess.run(["readlink", "/proc/self/ns/net"], capture_output=True,
                                   text=True, check=True).stdout.strip()  # fmt: skip
    assert hostname == "who"


def test_services_answer_by_cluster_dns_name(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str, python_image: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    host_name = serve(k, "web", busybox)
    phase, out = fetch(k, "client", python_image, f"http://{host_name}/hostname")
    assert phase == "Succeeded" and out.strip() == "web", out
    # A name outside the cluster is answered NXDOMAIN at once: there is no upstream.
    phase, out = run_pod_to_end(
        k, pod("outside", busybox, ["/bin/busybox", "nslookup", "example.com", "10.0.0.10"])
    )
    assert phase == "Failed" and "NXDOMAIN" in out, out


def test_a_claim_binds_on_the_node_and_keeps_its_data(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    k.apply({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}},
    })  # fmt: skip
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}

    def with_volume(name: str, script: str) -> dict[str, Any]:
        p = pod(name, busybox, ["/bin/busybox", "sh", "-c", script],
                volumeMounts=[{"name": "data", "mountPath": "/data"}])  # fmt: skip
        p["spec"].update(volume)
        p["spec"]["securityContext"]["fsGroup"] = 65532
        return p

    phase, out = run_pod_to_end(k, with_volume("writer", "echo kept > /data/f && echo ok"), 180)
    assert phase == "Succeeded", out
    assert k.json("get", "pvc", "data")["status"]["phase"] == "Bound"
    phase, out = run_pod_to_end(k, with_volume("reader", "/bin/busybox cat /data/f"))
    assert phase == "Succeeded" and out.strip() == "kept", out


def client(k: Kubectl, name: str, image: str) -> None:
    """A long-running pod to fetch from with `kubectl exec` (a new pod's address reaches
    the policy enforcer's sets a moment after the pod starts)."""
    k.apply(pod(name, image, ["python", "-c", "import time; time.sleep(3600)"]))
    k("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")


def reaches(k: Kubectl, name: str, url: str) -> bool:
    out = k.run("exec", name, "--", "python", "-c", FETCH, url, check=False)
    return out.returncode == 0 and out.stdout.strip() == "web"


def test_network_policies_are_enforced_for_ingress_and_egress(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str, python_image: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    other = make_namespace(real_cluster.kubeconfig, "policy-client")
    try:
        outside = Kubectl(real_cluster.kubeconfig, other)
        url = f"http://{serve(k, 'web', busybox)}/hostname"
        client(k, "inside", python_image)
        client(outside, "outside", python_image)
        # Control: before any policy, both reach the server.
        wait_for("the outside client to reach the server", lambda: reaches(outside, "outside", url))
        assert reaches(k, "inside", url)
        # Ingress: only pods of the server's own namespace may connect.
        k.apply({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "same-namespace-only"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {}}]}]},
        })  # fmt: skip
        wait_for("the ingress policy to refuse the other namespace",
                 lambda: not reaches(outside, "outside", url), timeout=60)  # fmt: skip
        assert reaches(k, "inside", url)
        # Egress: the outside namespace may reach DNS only; with the ingress policy gone
        # the server would let it in, so only its own egress policy can stop it.
        outside.apply({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "dns-only"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"ports": [{"port": 53, "protocol": "UDP"},
                                           {"port": 53, "protocol": "TCP"}]}]},
        })  # fmt: skip
        k("delete", "networkpolicy", "same-namespace-only")
        wait_for("the ingress policy to be gone", lambda: reaches(k, "inside", url), timeout=60)
        assert not reaches(outside, "outside", url)
        outside("delete", "networkpolicy", "dns-only")
        wait_for("the egress policy to be gone", lambda: reaches(outside, "outside", url),
                 timeout=60)  # fmt: skip
    finally:
        Kubectl(real_cluster.kubeconfig).run("delete", "namespace", other, "--wait=false",
                                             check=False)  # fmt: skip


def test_pod_traffic_cannot_leave_the_machine(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str, python_image: str
) -> None:
    """A canary network routed into a network namespace of its own stands for "off the
    machine": the guard must drop a pod's packets to it (and if it did not, they would end
    in that namespace, so nothing can leave even when this test fails)."""
    canary = "198.51.100.0/24"  # TEST-NET-2, routed into the canary namespace below
    subprocess.run(["ip", "netns", "delete", "wscanary"], check=False, capture_output=True)
    for cmd in (["ip", "netns", "add", "wscanary"],
                ["ip", "link", "add", "wscanary0", "type", "veth", "peer", "name", "wscanary1",
                 "netns", "wscanary"],
                ["ip", "link", "set", "wscanary0", "up"],
                ["ip", "-n", "wscanary", "link", "set", "wscanary1", "up"],
                ["ip", "route", "replace", canary, "dev", "wscanary0"]):  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    try:
        k = Kubectl(real_cluster.kubeconfig, real_namespace)
        before = host.egress_guard_drops()
        phase, out = fetch(k, "leaver", python_image, "http://198.51.100.7/")
        assert phase == "Failed", out
        assert host.egress_guard_drops() > before
        # Control: the node's own address is on the machine and answers (the API server).
        connect = (f"import socket; socket.create_connection(('{NODE_IP}', "
                   f"{real_cluster.ports.apiserver}), timeout=3); print('reached')")  # fmt: skip
        phase, out = run_pod_to_end(k, pod("stayer", python_image, ["python", "-c", connect]))
        assert phase == "Succeeded" and "reached" in out, (phase, out)
    finally:
        subprocess.run(["ip", "netns", "delete", "wscanary"], check=False, capture_output=True)


def test_kubectl_logs_and_exec_reach_the_node(
    real_cluster: localcluster.Cluster, real_namespace: str, busybox: str
) -> None:
    k = Kubectl(real_cluster.kubeconfig, real_namespace)
    k.apply(pod("sleeper", busybox, ["/bin/busybox", "sh", "-c", "echo started; sleep 600"]))
    k("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s")
    assert "started" in k("logs", "sleeper")
    assert k("exec", "sleeper", "--", "/bin/busybox", "cat", "/proc/1/status").count("Uid:") == 1
    out = json.loads(k("get", "pod", "sleeper", "-o", "json"))
    assert out["status"]["hostIP"] == NODE_IP
    # crictl, as docs/local-cluster.md shows it, sees the pod's container in the runtime.
    crictl = localcluster.bin_dirs()["crictl"] / "crictl"
    socket = node.layout_of(real_cluster.dir).socket
    ps = subprocess.run([str(crictl), "--runtime-endpoint", f"unix://{socket}", "ps", "-o", "json"],
                        capture_output=True, text=True, check=True)  # fmt: skip
    containers = json.loads(ps.stdout)["containers"]
    mine = [c for c in containers if c["labels"].get("io.kubernetes.pod.name") == "sleeper"]
    assert len(mine) == 1 and mine[0]["state"] == "CONTAINER_RUNNING", containers
