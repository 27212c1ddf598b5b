"""hack/localcluster.py starts a working control plane and stops it without leftovers."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import localcluster
import pytest
from harness import Kubectl

pytestmark = pytest.mark.cluster


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_down_leaves_no_process_or_port(tmp_path: Path) -> None:
    try:
        up_down(tmp_path)
    finally:
        localcluster.down(tmp_path / "c")  # a failed check leaves no cluster behind


def up_down(tmp_path: Path) -> None:
    ports = localcluster.Ports.free()
    c = localcluster.up(tmp_path / "c", ports=ports)
    first = dict(localcluster.State.load(c.dir / "state.json").pids)  # type: ignore[union-attr]
    assert set(first) == set(localcluster.COMPONENTS) - set(localcluster.REAL_NODE)
    assert "wallestars-node" in Kubectl(c.kubeconfig)("get", "nodes")

    # A run that crashed without `down` leaves processes behind; the next `up` in the
    # same directory stops them before it starts afresh.
    c = localcluster.up(tmp_path / "c", ports=ports)
    second = dict(localcluster.State.load(c.dir / "state.json").pids)  # type: ignore[union-attr]
    for name, pid in first.items():
        assert not localcluster.pid_alive(pid), f"{name} (pid {pid}) of the crashed run survived"

    localcluster.down(tmp_path / "c")
    for name, pid in second.items():
        assert not localcluster.pid_alive(pid), f"{name} (pid {pid}) survived down"
    for name, port in asdict(ports).items():
        assert not port_open(port), f"port {port} ({name}) still bound"
    assert localcluster.status(tmp_path / "c") == {}


def test_real_node_down_leaves_no_process_port_rule_or_mount(tmp_path: Path) -> None:
    try:
        real_up_down(tmp_path)
    finally:
        localcluster.down(tmp_path / "r")


def real_up_down(tmp_path: Path) -> None:
    ports = localcluster.Ports.free()
    netns_before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                      check=True).stdout.split())  # fmt: skip
    c = localcluster.up(tmp_path / "r", ports=ports, real_node=True)
    pids = dict(localcluster.State.load(c.dir / "state.json").pids)  # type: ignore[union-attr]
    assert set(pids) == set(localcluster.COMPONENTS) - {"node"}
    k = Kubectl(c.kubeconfig)
    k(
        "wait",
        "--for=condition=Available",
        "-n",
        "kube-system",
        "deployment/coredns",
        "--timeout=60s",
    )
    assert "KUBE-SERVICES" in subprocess.run(["iptables-save", "-t", "nat"], capture_output=True,
                                             text=True, check=True).stdout  # fmt: skip
    localcluster.down(tmp_path / "r")
    for name, pid in pids.items():
        assert not localcluster.pid_alive(pid), f"{name} (pid {pid}) survived down"
    for name, port in asdict(ports).items():
        assert not port_open(port), f"port {port} ({name}) still bound"
    rules = "".join(subprocess.run([cmd, "-t", t], capture_output=True, text=True, check=True).stdout
                    for cmd in ("iptables-save", "ip6tables-save") for t in ("filter", "nat"))  # fmt: skip
    assert "KUBE-" not in rules
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert not {n for n in netns.stdout.split() if n.startswith("cni-")} - netns_before
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(c.dir) not in mounts and "/var/lib/wallestars/kubelet" not in mounts
