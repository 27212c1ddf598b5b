"""Jobs through the real Job controller and scheduler, with the node stand-in as kubelet."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from typing import Any

import pytest
from harness import Kubectl, wait_for

pytestmark = pytest.mark.cluster

# What Pod Security `restricted` asks of every container (the test namespaces enforce it).
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job(name: str, script: str, backoff: int = 0, **spec: Any) -> dict[str, Any]:
    """A Job running ``sh -c script``. Kubernetes reads $$ in a command as an escaped $."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "main",
                "image": "busybox:stable",
                "command": ["sh", "-c", script],
                "securityContext": RESTRICTED,
            }
        ],
    }
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": {"spec": pod_spec}, **spec},
    }


def job_condition(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    """The Job's terminal condition (Complete or Failed) once it has one."""
    conds = kubectl.json("get", "job", name).get("status", {}).get("conditions", [])
    for c in conds:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return dict(c)
    return None


def pods_of(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "pods", "-l", f"job-name={name}")["items"])


def test_job_that_exits_zero_completes(kubectl: Kubectl) -> None:
    kubectl.apply(job("ok", "echo hello from $HOSTNAME-less pod; exit 0"))
    cond = wait_for("job ok to finish", lambda: job_condition(kubectl, "ok"))
    assert cond["type"] == "Complete"
    [pod] = pods_of(kubectl, "ok")
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert pod["status"]["phase"] == "Succeeded"
    # The output is kept, and kubectl logs reaches it through the API server.
    assert "hello from" in kubectl("logs", "job/ok")


def test_job_that_exits_three_retries_once_then_fails(kubectl: Kubectl) -> None:
    kubectl.apply(job("fail", "echo try; exit 3", backoff=1))
    cond = wait_for("job fail to fail", lambda: job_condition(kubectl, "fail"), timeout=90)
    assert cond["type"] == "Failed" and cond["reason"] == "BackoffLimitExceeded"
    pods = pods_of(kubectl, "fail")
    assert len(pods) == 2  # backoffLimit 1: the first run and one retry
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_job_past_its_deadline_is_killed(kubectl: Kubectl, cluster: Any) -> None:
    kubectl.apply(job("slow", "echo pid=$$$$; exec sleep 300", activeDeadlineSeconds=3))
    cond = wait_for("job slow to fail", lambda: job_condition(kubectl, "slow"), timeout=60)
    assert cond["type"] == "Failed" and cond["reason"] == "DeadlineExceeded"
    pid = int(re.findall(r"pid=(\d+)", pid_log(cluster, kubectl.namespace or "", "slow"))[0])
    wait_for(f"process {pid} to be stopped", lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)


def pid_log(cluster: Any, namespace: str, job_name: str) -> str:
    """The stand-in's kept log of a job's pod, read from its directory (pods may be gone)."""
    logs = cluster.dir / "node" / "logs"
    found = wait_for(
        f"a log of {job_name}",
        lambda: [
            p for p in logs.glob(f"{namespace}_{job_name}-*/main.log") if "pid=" in p.read_text()
        ],
    )
    return str(found[0].read_text())


def test_env_and_mounted_secret_reach_the_process(kubectl: Kubectl) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {
                "token": base64.b64encode(b"s3cr3t-env").decode(),
                "file.txt": base64.b64encode(b"s3cr3t-file").decode(),
            },
        }
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"mode": "fast"},
        }
    )
    spec = job(
        "env",
        "echo env=$TOKEN mode=$MODE pod=$POD_NAME ns=$POD_NS greeting=$GREETING; "
        "cat /etc/creds/file.txt; echo; ls /etc/creds",
        pod={
            "volumes": [
                {
                    "name": "creds",
                    "secret": {
                        "secretName": "creds",
                        "items": [{"key": "file.txt", "path": "file.txt"}],
                    },
                }
            ],
        },
    )
    c = spec["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NAME", "value": "world"},
        {"name": "GREETING", "value": "hello-$(NAME)"},
    ]
    c["volumeMounts"] = [{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}]
    kubectl.apply(spec)
    cond = wait_for("job env to finish", lambda: job_condition(kubectl, "env"))
    logs = kubectl("logs", "job/env")
    assert cond["type"] == "Complete", logs
    [pod] = pods_of(kubectl, "env")
    assert (
        f"env=s3cr3t-env mode=fast pod={pod['metadata']['name']} ns={kubectl.namespace} greeting=hello-world"
        in logs
    )
    assert "s3cr3t-file" in logs
    assert logs.strip().endswith("file.txt")  # only the item asked for is mounted
    # The mount is private to the pod's process: the host path stays empty.
    assert not os.path.exists("/etc/creds/file.txt")


def test_in_cluster_config_works_from_a_pod(kubectl: Kubectl) -> None:
    """The projected service-account token, CA and KUBERNETES_SERVICE_* reach the API."""
    script = (
        "import json, os, ssl, urllib.request\n"
        "d = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "host, port = os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT']\n"
        "ctx = ssl.create_default_context(cafile=d + '/ca.crt')\n"
        "req = urllib.request.Request(f'https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews',\n"
        "  data=json.dumps({'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'}).encode(),\n"
        "  headers={'Authorization': 'Bearer ' + open(d + '/token').read(), 'Content-Type': 'application/json'})\n"
        "out = json.load(urllib.request.urlopen(req, context=ctx))\n"
        "print('user=' + out['status']['userInfo']['username'])\n"
        "print('ns=' + open(d + '/namespace').read())\n"
    )
    spec = job("incluster", "")
    spec["spec"]["template"]["spec"]["containers"][0]["command"] = ["python3", "-c", script]
    kubectl.apply(spec)
    cond = wait_for("job incluster to finish", lambda: job_condition(kubectl, "incluster"))
    logs = kubectl("logs", "job/incluster")
    assert cond["type"] == "Complete", logs
    assert f"user=system:serviceaccount:{kubectl.namespace}:default" in logs
    assert f"ns={kubectl.namespace}" in logs


def test_deleting_the_job_stops_the_process(kubectl: Kubectl, cluster: Any) -> None:
    kubectl.apply(job("victim", "echo pid=$$$$; exec sleep 300"))
    pid = int(re.findall(r"pid=(\d+)", pid_log(cluster, kubectl.namespace or "", "victim"))[0])
    assert os.path.exists(f"/proc/{pid}")
    wait_for(
        "the pod to run",
        lambda: [
            p for p in pods_of(kubectl, "victim") if p.get("status", {}).get("phase") == "Running"
        ],
    )
    kubectl("delete", "job", "victim", "--wait=false")
    wait_for(f"process {pid} to be stopped", lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)
    wait_for("the pod to be gone", lambda: not pods_of(kubectl, "victim"), timeout=60)


def test_missing_secret_holds_the_pod_with_a_reason(kubectl: Kubectl) -> None:
    spec = job("nosecret", "echo $X")
    spec["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "x"}}}
    ]
    kubectl.apply(spec)

    def waiting_reason() -> Any:
        pods = pods_of(kubectl, "nosecret")
        statuses = pods[0].get("status", {}).get("containerStatuses", []) if pods else []
        return statuses and statuses[0]["state"].get("waiting")

    waiting = wait_for("the pod to wait on its Secret", waiting_reason)
    assert waiting["reason"] == "CreateContainerConfigError"
    assert 'Secret "later" not found' in waiting["message"]
    # Once the Secret exists, the pod starts, as with a real kubelet.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "stringData": {"x": "arrived"},
        }
    )
    cond = wait_for("job nosecret to finish", lambda: job_condition(kubectl, "nosecret"))
    assert cond["type"] == "Complete"
    assert "arrived" in kubectl("logs", "job/nosecret")


def test_node_is_ready_with_its_lease(cluster: Any) -> None:
    k = Kubectl(cluster.kubeconfig)
    node = k.json("get", "node", "wallestars-node")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease = json.loads(k("get", "lease", "-n", "kube-node-lease", "wallestars-node", "-o", "json"))
    assert lease["spec"]["holderIdentity"] == "wallestars-node"


def test_sigterm_then_sigkill_after_the_grace_period(kubectl: Kubectl, cluster: Any) -> None:
    # The process ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    kubectl.apply(
        job("stubborn", "trap '' TERM; echo pid=$$$$; while true; do sleep 0.2; done",
            pod={"terminationGracePeriodSeconds": 3})
    )  # fmt: skip
    pid = int(re.findall(r"pid=(\d+)", pid_log(cluster, kubectl.namespace or "", "stubborn"))[0])
    [pod] = pods_of(kubectl, "stubborn")
    kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
    time.sleep(1.0)
    assert os.path.exists(f"/proc/{pid}"), "killed before its grace period ended"
    wait_for(f"process {pid} to be killed", lambda: not os.path.exists(f"/proc/{pid}"), timeout=20)


def test_restart_policy_always_restarts_and_counts(kubectl: Kubectl) -> None:
    """Deployments (the operator and webhook pods later) restart crashed containers."""
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "crashy"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox:stable",
                        "command": ["sh", "-c", "echo started; sleep 0.3; exit 1"],
                        "securityContext": RESTRICTED,
                    }
                ],
            },
        }
    )

    def restarts() -> int:
        st = kubectl.json("get", "pod", "crashy").get("status", {}).get("containerStatuses", [{}])
        return int(st[0].get("restartCount", 0))

    wait_for("two restarts", lambda: restarts() >= 2, timeout=30)
    last = kubectl.json("get", "pod", "crashy")["status"]["containerStatuses"][0]["lastState"]
    assert last["terminated"]["exitCode"] == 1
    assert kubectl.json("get", "pod", "crashy")["status"]["phase"] == "Running"
