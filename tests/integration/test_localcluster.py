"""hack/localcluster.py starts a working control plane and stops it without leftovers."""

from __future__ import annotations

import socket
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
    ports = localcluster.Ports.free()
    c = localcluster.up(tmp_path / "c", ports=ports)
    first = dict(localcluster.State.load(c.dir / "state.json").pids)  # type: ignore[union-attr]
    assert set(first) == set(localcluster.COMPONENTS)
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
