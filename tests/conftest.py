"""Shared fixtures: the local control plane (session), a namespace per test, kubectl."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

import localcluster
from harness import REPO, Kubectl, wait_for

CRDS = sorted((REPO / "crds").glob("*.yaml"))
# What a prerequisite named in @pytest.mark.requires(...) needs, and how to get it.
PREREQUISITES = {
    "chromium": ("chromium", "Debian's chromium: hack/setup.sh installs it"),
    "firefox": ("firefox-esr", "Debian's firefox-esr: hack/setup.sh installs it"),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(*names): a prerequisite, see PREREQUISITES")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A missing prerequisite skips a test on a developer's machine; under CI it fails
    the test, so a broken set-up can never pass as a run of skips."""
    for mark in item.iter_markers("requires"):
        for name in mark.args:
            command, how = PREREQUISITES[name]
            if shutil.which(command) is None:
                if os.environ.get("CI"):
                    pytest.fail(f"prerequisite missing under CI: {name} ({how})", pytrace=False)
                pytest.skip(f"needs {name} ({how})")


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.Cluster]:
    """The real control plane plus the node stand-in, once per test session."""
    state_dir = Path(os.environ.get("WALLESTARS_TEST_CLUSTER_DIR", REPO / ".cluster" / "test"))
    yield from cluster_with_crds(state_dir, real_node=False)


def cluster_with_crds(state_dir: Path, real_node: bool) -> Iterator[localcluster.Cluster]:
    """A control plane in ``state_dir`` on free ports, its CRDs established, stopped when
    the fixture using it ends. The audit log lets tests count exactly which API writes
    a component made."""
    c = localcluster.up(state_dir, ports=localcluster.Ports.free(), audit=True, real_node=real_node)
    try:
        k = Kubectl(c.kubeconfig)
        for crd in CRDS:
            k("apply", "--server-side", "-f", str(crd))
        k("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield c
    finally:
        localcluster.down(state_dir)


def make_namespace(kubeconfig: Path, test_name: str, enforce: str = "restricted") -> str:
    """A fresh namespace for one test, held to a Pod Security level (production's is
    `restricted`), once its default service account exists."""
    name = f"t-{test_name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    k = Kubectl(kubeconfig)
    k.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": enforce,
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    wait_for(
        "default service account",
        lambda: k.run("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    return name


@pytest.fixture
def namespace(cluster: localcluster.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, held to Pod Security `restricted` like production."""
    name = make_namespace(cluster.kubeconfig, request.node.name)
    yield name
    Kubectl(cluster.kubeconfig).run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def real_cluster() -> Iterator[localcluster.Cluster]:
    """The control plane on a real node (kubelet, containerd, CNI, kube-proxy, CoreDNS,
    kube-router, local-path-provisioner), once per test module: there can be one real
    node per machine (docs/local-cluster.md), and it starts in about 10 s, so a module
    that needs a cluster of its own (the chart's) gets one after the previous is down."""
    state_dir = Path(os.environ.get("WALLESTARS_REAL_CLUSTER_DIR", REPO / ".cluster" / "real"))
    yield from cluster_with_crds(state_dir, real_node=True)


@pytest.fixture
def real_namespace(
    real_cluster: localcluster.Cluster, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh `restricted` namespace on the real node's cluster."""
    name = make_namespace(real_cluster.kubeconfig, request.node.name)
    yield name
    Kubectl(real_cluster.kubeconfig).run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubectl(cluster: localcluster.Cluster, namespace: str) -> Kubectl:
    return Kubectl(cluster.kubeconfig, namespace)
