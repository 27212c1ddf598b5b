"""How a browser attempt ends when its container is killed or runs out of memory, and what
an eviction does, as the real kubelet and Job controller report them (the stand-in's
versions are in test_operator.py): the task gets the reasons the API defines
(DESIGN.md §3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import localcluster
import pytest
from harness import Kubectl, OperatorProcess, phase_is, start_operator, task, wait_for
from realnode import images, node

from tests.conftest import make_namespace

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def python_image(real_cluster: localcluster.Cluster) -> str:
    return images.ensure(node.layout_of(real_cluster.dir), ["agents"])["agents"]


@pytest.fixture(scope="module")
def operator(
    real_cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a host process; these agents never call back, so no webhook
    service is needed (the callback URL is one nothing listens on)."""
    op = start_operator(real_cluster, tmp_path_factory.mktemp("operator"), [os.urandom(32)],
                        f"http://{real_cluster.host}:9")  # fmt: skip
    yield op
    op.stop()


@pytest.fixture
def k(real_cluster: localcluster.Cluster, request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    ns = make_namespace(real_cluster.kubeconfig, request.node.name)
    yield Kubectl(real_cluster.kubeconfig, ns)
    Kubectl(real_cluster.kubeconfig).run("delete", "namespace", ns, "--wait=false", check=False)


def agent(k: Kubectl, name: str, image: str, script: str, **browser: Any) -> None:
    k.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"type": "browser", "capabilities": ["custom"], "concurrency": 1,
                 "browser": {"image": image, "imagePullPolicy": "Never",
                             "command": ["python", "-c", script], **browser}},
    })  # fmt: skip


def running_pod(k: Kubectl, task_name: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for p in k.json("get", "pods", "-l", f"agents.wallestars.io/task={task_name}")["items"]:
            if any("running" in (c.get("state") or {})
                   for c in p["status"].get("containerStatuses") or []):  # fmt: skip
                return dict(p)
        return None

    return dict(wait_for(f"{task_name}'s pod to run", find, timeout=90))


def ended(k: Kubectl, name: str) -> dict[str, Any]:
    return dict(wait_for(f"{name} to end", lambda: phase_is(k, name, "Failed", "Succeeded",
                                                            "TimedOut"), timeout=120))  # fmt: skip


def test_memory_limit_exceeded_is_oomkilled(
    operator: OperatorProcess, k: Kubectl, python_image: str
) -> None:
    agent(k, "hog", python_image, "x = bytearray(400 * 1024 * 1024); print(len(x))",
          resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}})  # fmt: skip
    task(k, "hog-task", "hog", retries={"limit": 0})
    st = ended(k, "hog-task")
    assert (st["phase"], st["reason"]) == ("Failed", "OOMKilled"), st
    assert st["attempts"][0]["exitCode"] == 137
    (pod,) = k.json("get", "pods", "-l", "agents.wallestars.io/task=hog-task")["items"]
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["reason"] == "OOMKilled"  # the kubelet's own word


def test_killed_main_process_is_a_missing_callback_with_its_signal(
    operator: OperatorProcess, k: Kubectl, python_image: str, real_cluster: localcluster.Cluster
) -> None:
    agent(k, "sleeper", python_image, "import time; time.sleep(600)")
    task(k, "killed-task", "sleeper", retries={"limit": 0})
    pod = running_pod(k, "killed-task")
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    info = node.ctr(node.layout_of(real_cluster.dir), "tasks", "ls").stdout
    (line,) = [ln for ln in info.splitlines() if ln.startswith(container_id)]
    os.kill(int(line.split()[1]), signal.SIGKILL)  # the container's main process, from the host
    st = ended(k, "killed-task")
    assert (st["phase"], st["reason"]) == ("Failed", "CallbackMissing"), st
    assert st["attempts"][0]["exitCode"] == 137 and "exited with code 137" in st["message"]


def test_evicted_pod_is_replaced_and_the_attempt_goes_on(
    operator: OperatorProcess, k: Kubectl, python_image: str
) -> None:
    """An eviction (a drain, the Eviction API) is a disruption, not the agent failing: the
    Job's podFailurePolicy ignores it and starts the attempt's pod again, so the task is
    not failed (docs/operator.md). The real kubelet and Job controller do exactly that."""
    agent(k, "evictee", python_image, "import time; time.sleep(600)")
    task(k, "evicted-task", "evictee", retries={"limit": 0})
    pod = running_pod(k, "evicted-task")
    name = pod["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": k.namespace}}  # fmt: skip
    path = Path(k.kubeconfig).parent / f"eviction-{name}.json"
    path.write_text(json.dumps(eviction))
    out = subprocess.run(
        ["kubectl", f"--kubeconfig={k.kubeconfig}", "create", "--raw",
         f"/api/v1/namespaces/{k.namespace}/pods/{name}/eviction", "-f", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    replacement = wait_for(
        "a replacement pod to run",
        lambda: (p := running_pod(k, "evicted-task"))["metadata"]["name"] != name and p,
        timeout=90,
    )
    assert replacement["metadata"]["labels"]["agents.wallestars.io/attempt"] == "1"
    st = k.json("get", "agenttask", "evicted-task")["status"]
    assert st["phase"] in ("Dispatched", "Running") and st["attempt"] == 1, st
    (job,) = k.json("get", "jobs", "-l", "agents.wallestars.io/task=evicted-task")["items"]
    assert not [c for c in job["status"].get("conditions") or [] if c["type"] == "Failed"]
