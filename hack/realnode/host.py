"""The host side of the real node: its address, forwarding, and the egress guard.

All of it is idempotent, so ``prepare`` runs before every start, and safe to leave in
place between runs: the guard only ever drops pod traffic bound off the machine.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from realnode.config import BRIDGE, EGRESS_TABLE, NODE_IP, NODE_LINK, egress_rules


class HostError(RuntimeError):
    """The host cannot be made into a node (a missing tool or kernel feature)."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise HostError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.strip()}")
    return out


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    if not path.exists():
        raise HostError(f"{key} is missing: the kernel lacks what the node needs ({path})")
    if path.read_text().strip() != value:
        path.write_text(value)


def prepare() -> None:
    """Node address, forwarding for Service traffic, bridged packets seen by netfilter
    (kube-proxy and NetworkPolicy need both), and the egress guard installed first."""
    if _run("ip", "-br", "addr", "show", "dev", NODE_LINK, check=False).returncode != 0:
        # A bridge with no ports, for want of the dummy module in this kernel: only its
        # address matters, and the address of a link routes nowhere off the machine.
        _run("ip", "link", "add", NODE_LINK, "type", "bridge")
    if NODE_IP not in _run("ip", "-br", "addr", "show", "dev", NODE_LINK).stdout:
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
    _run("ip", "link", "set", NODE_LINK, "up")
    install_egress_guard()
    _sysctl("net.bridge.bridge-nf-call-iptables", "1")
    _sysctl("net.bridge.bridge-nf-call-ip6tables", "1")
    # Forwarding only after the guard is in: a pod's packet to a Service backed by
    # another pod is routed back onto the bridge; nothing may be routed anywhere else.
    _sysctl("net.ipv4.ip_forward", "1")


def install_egress_guard() -> None:
    """(Re)load the nftables table that drops pod packets routed off the bridge."""
    _run("nft", "delete", "table", "inet", EGRESS_TABLE, check=False)
    out = subprocess.run(
        ["nft", "-f", "-"], input=egress_rules(), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise HostError(f"nft could not load the egress guard: {out.stderr.strip()}")


def egress_guard_drops() -> int:
    """Packets the guard has dropped so far (its rule's counter)."""
    out = _run("nft", "list", "table", "inet", EGRESS_TABLE).stdout
    for line in out.splitlines():
        if "counter packets" in line and "drop" in line:
            return int(line.split("counter packets", 1)[1].split()[0])
    raise HostError(f"no counter in the egress guard:\n{out}")


def remove_pod_network_leftovers() -> None:
    """Network namespaces and the bridge a killed runtime left; the next start makes new."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("cni-"):
            _run("ip", "netns", "delete", name, check=False)
    with contextlib.suppress(HostError):
        _run("ip", "link", "delete", BRIDGE)


def remove_kube_rules() -> None:
    """Every iptables chain and rule kube-proxy, kube-router and the kubelet made (all
    named KUBE-*), and kube-router's ipsets: a stopped node leaves no filtering or NAT
    behind. (Their own clean-up flags leave kube-router's chains in place here.)"""
    for save, restore in (
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ):
        for table in ("filter", "nat", "mangle", "raw"):
            dump = _run(save, "-t", table, check=False).stdout
            if "KUBE-" not in dump:
                continue
            kept = "\n".join(line for line in dump.splitlines() if "KUBE-" not in line) + "\n"
            out = subprocess.run([restore, "-w"], input=kept, capture_output=True, text=True,
                                 check=False)  # fmt: skip
            if out.returncode != 0:
                raise HostError(f"{restore} -t {table}: {out.stderr.strip()}")
    for name in _run("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(("KUBE-", "kube-router")):
            _run("ipset", "destroy", name, check=False)
