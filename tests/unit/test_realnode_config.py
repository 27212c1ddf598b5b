"""The real node's configuration files (hack/realnode/config.py): each parses as its
program reads it, and carries the settings this host needs (DESIGN.md §9)."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

from realnode import config
from realnode.config import Layout

LAYOUT = Layout(root=Path("/x/node"), images=Path("/var/lib/wallestars/containerd"))


def test_containerd_config_is_valid_toml_with_the_settings_this_kernel_needs() -> None:
    doc = tomllib.loads(config.containerd_toml(LAYOUT))
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert doc["version"] == 2
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == config.PAUSE_IMAGE
    runtimes = cri["containerd"]["runtimes"]
    assert cri["containerd"]["default_runtime_name"] in runtimes
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["runc"]["options"]["SystemdCgroup"] is False
    assert doc["grpc"]["address"] == str(LAYOUT.socket)
    # Images outlive the cluster; everything else is the cluster's own.
    assert doc["root"] == str(LAYOUT.images)
    # Sockets live in the state dir: a short path, whatever the cluster's dir is.
    assert len(str(Path(doc["state"]) / "containerd.sock.ttrpc")) < 104
    assert Path(cri["cni"]["conf_dir"]).is_relative_to(LAYOUT.root)


def test_pods_get_addresses_on_the_bridge_and_nothing_is_masqueraded() -> None:
    doc = json.loads(config.cni_conflist(LAYOUT))
    bridge = doc["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == config.BRIDGE
    assert bridge["ipMasq"] is False
    (rng,) = bridge["ipam"]["ranges"][0]
    assert ipaddress.ip_address(rng["gateway"]) in ipaddress.ip_network(rng["subnet"])
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(LAYOUT.root)


def test_addresses_do_not_overlap() -> None:
    pods = ipaddress.ip_network(config.POD_CIDR)
    node = ipaddress.ip_address(config.NODE_IP)
    dns = ipaddress.ip_address(config.CLUSTER_DNS)
    assert node not in pods and dns not in pods
    assert node.is_private and pods.is_private


def test_kubelet_accepts_cgroup_v1_and_never_collects_images() -> None:
    settings = config.KubeletSettings(
        node_name="n", port=1, healthz_port=2, tls_cert=Path("c"), tls_key=Path("k"),
        client_ca=Path("ca"),
    )  # fmt: skip
    doc = json.loads(config.kubelet_config(LAYOUT, settings))
    assert doc["failCgroupV1"] is False and doc["cgroupDriver"] == "cgroupfs"
    assert doc["containerRuntimeEndpoint"] == f"unix://{LAYOUT.socket}"
    assert doc["address"] == config.NODE_IP and doc["readOnlyPort"] == 0
    assert doc["authentication"]["anonymous"]["enabled"] is False
    assert doc["authorization"]["mode"] == "Webhook"
    assert doc["imageGCHighThresholdPercent"] == 100
    assert doc["clusterDNS"] == [config.CLUSTER_DNS]


def test_egress_guard_drops_what_leaves_the_bridge_before_other_forward_rules() -> None:
    rules = config.egress_rules()
    assert "hook forward priority filter - 10" in rules
    assert f'iifname "{config.BRIDGE}" oifname != "{config.BRIDGE}" counter drop' in rules


def test_only_other_builds_of_the_same_image_are_stale() -> None:
    from realnode.images import stale

    tags = [
        "localhost/wallestars/agents:aaa",
        "localhost/wallestars/agents:bbb",
        "localhost/wallestars/agents:bbb-next",
        "localhost/wallestars/browser-agent:aaa",
        "localhost/wallestars/pause:3.10",
        "sha256:0123",
    ]
    assert stale(tags, "localhost/wallestars/agents:bbb") == [
        "localhost/wallestars/agents:aaa",
        "localhost/wallestars/agents:bbb-next",
    ]
    assert stale(tags, "localhost/wallestars/pause:3.10") == []
