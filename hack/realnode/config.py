"""The real node's configuration files, as pure functions of where they live.

The node (docs/local-cluster.md) is one per machine: kube-proxy's and the policy
enforcer's iptables chains, the bridge and the kubepods cgroups are host-wide, so two
kubelets would fight over them. Its addresses are fixed and private to this machine:
the node's own address sits on a dummy interface, pods on a bridge, and the host drops
every packet a pod sends that is not for this machine (``egress_rules``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Not loopback: the kubelet refuses 127.0.0.1 as a node address, and pods cannot reach
# the host's loopback. A /32 on a link of its own (a bridge with no ports) is local.
NODE_IP = "10.77.0.1"
NODE_LINK = "wsnode0"
BRIDGE = "wsbr0"
POD_CIDR = "10.78.0.0/24"
POD_GATEWAY = "10.78.0.1"
# Inside the control plane's service range (localcluster.SERVICE_CIDR), kubeadm's choice.
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/wallestars/pause:3.10"
CNI_BIN = Path("/usr/lib/cni")
# The nftables table that keeps pod traffic on the machine. Its own table, hooked before
# the iptables-nft filter chains, so neither kube-proxy nor the policy enforcer (which
# prepend ACCEPT rules to FORWARD) can put anything in front of it.
EGRESS_TABLE = "wallestars_node"
RUN_DIR = Path("/run/wallestars-node")
KUBELET_DIR = Path("/var/lib/wallestars/kubelet")


@dataclass(frozen=True)
class Layout:
    """Where a node's files go: ``root`` is per cluster, ``images`` outlives clusters."""

    root: Path
    # containerd's content store and snapshots: kept across clusters, so images built
    # and imported once are there the next time (no registry to pull them back from).
    images: Path

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_state(self) -> Path:
        # Under /run, not ``root``: its sockets' paths must stay under the kernel's 108
        # bytes, and a test's temporary directory is longer. One node per machine.
        return RUN_DIR / "containerd"

    @property
    def socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        # A short path for the same reason (the kubelet's sockets); on disk, since pods'
        # emptyDirs are written there.
        return KUBELET_DIR

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"


def containerd_toml(layout: Layout) -> str:
    """containerd 1.6's config: its own socket, state and root, CRI with runc and CNI."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{layout.images}"
state = "{layout.containerd_state}"
# Snapshotters and plugins this node never uses only log errors at start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{layout.socket}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This kernel refuses a negative oom_score_adj (EIO) and the kubelet asks -998 for
  # every sandbox: without this, runc fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  # Spelled out: without them the CRI plugin says "container.Runtime.Name must be set".
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # The host is cgroup v1 with no systemd: the kubelet uses the cgroupfs driver too.
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{layout.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_conflist(layout: Layout) -> str:
    """A bridge network with host-local addresses; no masquerade, since nothing may leave."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "wallestars",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,
                    # A pod reaching itself through its own Service comes back in.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                        "dataDir": str(layout.ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


@dataclass(frozen=True)
class KubeletSettings:
    node_name: str
    port: int
    healthz_port: int
    tls_cert: Path
    tls_key: Path
    client_ca: Path


def kubelet_config(layout: Layout, s: KubeletSettings) -> str:
    """The KubeletConfiguration (JSON is YAML). Each departure from the defaults says why."""
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The host mounts cgroup v1 only; the kubelet refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{layout.socket}",
            "address": NODE_IP,
            "port": s.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": s.healthz_port,
            "tlsCertFile": str(s.tls_cert),
            "tlsPrivateKeyFile": str(s.tls_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(s.client_ca)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": CLUSTER_DOMAIN,
            # Pods with dnsPolicy Default get this (no upstream resolver exists here).
            "resolvConf": str(layout.resolv_conf),
            "failSwapOn": False,
            # Images cannot be pulled back from anywhere: never collect them for space.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # Only memory pressure evicts: the disk is shared with everything else here.
            "evictionHard": {"memory.available": "200Mi"},
            "serializeImagePulls": False,
            "maxPods": 110,
        },
        indent=2,
    )


@dataclass(frozen=True)
class ProxySettings:
    node_name: str
    kubeconfig: Path
    healthz_port: int
    metrics_port: int


def kube_proxy_config(s: ProxySettings) -> str:
    """kube-proxy in iptables mode (this kernel has no IPVS) on the pod bridge."""
    return json.dumps(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(s.kubeconfig)},
            "hostnameOverride": s.node_name,
            "bindAddress": NODE_IP,
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{s.healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{s.metrics_port}",
            # Leave the host's conntrack sysctls alone (0 = do not set).
            "conntrack": {"maxPerCore": 0, "min": 0},
        },
        indent=2,
    )


def egress_rules() -> str:
    """An nft script: pod packets that are routed (not delivered to this host) and do
    not go back onto the pod bridge are dropped, before any other forward rule.

    Everything a pod may reach is here: other pods (bridged, or forwarded back onto the
    bridge after a Service's DNAT) and this host's own addresses (delivered locally, the
    input hook, never forwarded). Anything else would leave the machine.
    """
    return f"""\
table inet {EGRESS_TABLE} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "{BRIDGE}" oifname != "{BRIDGE}" counter drop
  }}
}}
"""


def resolv_conf() -> str:
    """For pods with dnsPolicy Default: a resolver that answers nothing."""
    return "nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n"
