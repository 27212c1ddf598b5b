"""Shared fixtures: the local control plane (session), a namespace per test, kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

import localcluster  # noqa: E402

CRDS = sorted((REPO / "crds").glob("*.yaml"))


class Kubectl:
    """kubectl against the test cluster; the machine's own kubectl, as users run it."""

    def __init__(self, kubeconfig: Path, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def run(
        self, *args: str, input: str | None = None, check: bool = True, namespaced: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = ["kubectl", f"--kubeconfig={self.kubeconfig}"]
        if namespaced and self.namespace:
            argv.append(f"--namespace={self.namespace}")
        out = subprocess.run(
            [*argv, *args], input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr}")
        return out

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str | dict[str, Any]) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", input=text)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2
) -> Any:
    """Poll until ``check()`` is truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.Cluster]:
    """The real control plane plus the node stand-in, once per test session."""
    state_dir = Path(os.environ.get("WALLESTARS_TEST_CLUSTER_DIR", REPO / ".cluster" / "test"))
    # The audit log lets tests count exactly which API writes a component made.
    c = localcluster.up(state_dir, ports=localcluster.Ports.free(), audit=True)
    try:
        k = Kubectl(c.kubeconfig)
        for crd in CRDS:
            k("apply", "--server-side", "-f", str(crd))
        k("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield c
    finally:
        localcluster.down(state_dir)


@pytest.fixture
def namespace(cluster: localcluster.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, held to Pod Security `restricted` like production."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    k = Kubectl(cluster.kubeconfig)
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    wait_for(
        "default service account",
        lambda: k.run("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    k.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubectl(cluster: localcluster.Cluster, namespace: str) -> Kubectl:
    return Kubectl(cluster.kubeconfig, namespace)
