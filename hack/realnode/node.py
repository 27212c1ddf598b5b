"""Start and stop the real node: containerd, the kubelet and kube-proxy, as processes of
the local cluster (hack/localcluster.py starts them after the control plane).

What each piece is and why it is configured so is in realnode/config.py and
docs/local-cluster.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from realnode import addons, config, host
from realnode.config import Layout

# One node per machine: its containerd keeps images here across clusters.
IMAGES = Path(os.environ.get("WALLESTARS_NODE_IMAGES", "/var/lib/wallestars/containerd"))
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses
LOCK = Path("/run/wallestars-realnode.lock")
# The add-ons on the host speak as these users (certificates from the cluster's CA).
ROUTER_USER = "system:kube-router"
LOCAL_PATH_USER = "system:local-path-provisioner"
APISERVER_KUBELET_USER = "kube-apiserver-kubelet-client"  # localcluster.make_pki
HOST_PROCESSES = ("local-path-provisioner", "kube-router", "kube-proxy", "kubelet")


class NodeError(RuntimeError):
    """The real node could not start or stop."""


StartFn = Callable[[str, list[str], dict[str, str] | None], int]
WaitFn = Callable[[str, Callable[[], bool], float, str, int], None]


@dataclass(frozen=True)
class NodeContext:
    """What the local cluster hands the node: its files, binaries and ways to run them."""

    root: Path
    # Binary name -> the directory holding it (hack/build-tools.sh's cache).
    bins: dict[str, Path]
    # Identity -> kubeconfig: admin, node, kube-proxy, kube-router, local-path-provisioner.
    kubeconfigs: dict[str, Path]
    pki: Path
    node_name: str
    service_cidr: str
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int
    router_health_port: int
    start: StartFn
    wait: WaitFn

    @property
    def layout(self) -> Layout:
        return Layout(root=self.root, images=IMAGES)

    def bin(self, name: str) -> str:
        return str(self.bins[name] / name)


def layout_of(cluster_dir: Path) -> Layout:
    """The node's files of the local cluster in ``cluster_dir``."""
    return Layout(root=cluster_dir / "node", images=IMAGES)


def ctr(layout: Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["ctr", "--address", str(layout.socket), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and out.returncode != 0:
        raise NodeError(f"ctr {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
    return out


def claim() -> None:
    """Refuse a second real node on this machine while another one's kubelet runs."""
    if LOCK.exists():
        with contextlib.suppress(ValueError, OSError, IndexError):
            pid_text, where = LOCK.read_text().split(maxsplit=1)
            if Path(f"/proc/{int(pid_text)}").exists():
                raise NodeError(
                    f"a real node already runs on this machine (kubelet pid {pid_text}, "
                    f"cluster {Path(where.strip()).parent}); stop it first "
                    f"(python3 hack/localcluster.py down --dir {Path(where.strip()).parent})"
                )
    LOCK.parent.mkdir(parents=True, exist_ok=True)


def write_configs(ctx: NodeContext) -> None:
    lay = ctx.layout
    for d in (lay.root, lay.containerd_state, lay.cni_conf_dir, lay.ipam_dir, lay.kubelet_dir):
        d.mkdir(parents=True, exist_ok=True)
    lay.images.mkdir(parents=True, exist_ok=True)
    lay.containerd_config.write_text(config.containerd_toml(lay))
    (lay.cni_conf_dir / "10-wallestars.conflist").write_text(config.cni_conflist(lay))
    lay.resolv_conf.write_text(config.resolv_conf())
    lay.kubelet_config.write_text(
        config.kubelet_config(
            lay,
            config.KubeletSettings(
                node_name=ctx.node_name,
                port=ctx.kubelet_port,
                healthz_port=ctx.kubelet_healthz_port,
                tls_cert=ctx.pki / "kubelet-serving.crt",
                tls_key=ctx.pki / "kubelet-serving.key",
                client_ca=ctx.pki / "ca.crt",
            ),
        )
    )
    lay.proxy_config.write_text(
        config.kube_proxy_config(
            config.ProxySettings(
                node_name=ctx.node_name,
                kubeconfig=ctx.kubeconfigs["kube-proxy"],
                healthz_port=ctx.proxy_healthz_port,
                metrics_port=ctx.proxy_metrics_port,
            )
        )
    )


def _http_ok(url: str) -> bool:
    out = subprocess.run(["curl", "-sf", "-m", "2", url], capture_output=True, check=False)
    return out.returncode == 0


def up(ctx: NodeContext, pids: dict[str, int]) -> None:
    """Start containerd, the kubelet, kube-proxy and the add-ons; return once the Node
    is Ready and cluster DNS answers."""
    from realnode import images  # the image builder needs a running containerd

    claim()
    host.prepare()
    # containerd's state (tasks, sockets, sandbox mounts) lives only as long as it runs;
    # what a killed one left would be mistaken for live containers.
    for transient in (ctx.layout.containerd_state, ctx.layout.kubelet_dir):
        unmount_under(transient)
        shutil.rmtree(transient, ignore_errors=True)
    write_configs(ctx)
    lay = ctx.layout
    pids["containerd"] = ctx.start(
        "containerd", ["containerd", "--config", str(lay.containerd_config)], None
    )
    ctx.wait(
        "containerd",
        lambda: ctr(lay, "version", check=False).returncode == 0,
        30,
        "containerd",
        pids["containerd"],
    )
    remove_stale_pods(lay)
    images.ensure_pause(lay)
    coredns_image = images.build_binary_image("coredns", Path(ctx.bin("coredns")))
    helper_image = images.build_busybox()
    for tag in (coredns_image, helper_image):
        images.import_image(lay, tag)
    pids["kubelet"] = ctx.start(
        "kubelet",
        [
            ctx.bin("kubelet"),
            f"--config={lay.kubelet_config}",
            f"--kubeconfig={ctx.kubeconfigs['node']}",
            f"--root-dir={lay.kubelet_dir}",
            f"--node-ip={config.NODE_IP}",
            f"--hostname-override={ctx.node_name}",
            "--v=1",
        ],
        None,
    )
    LOCK.write_text(f"{pids['kubelet']} {ctx.root}\n")
    ctx.wait("kubelet", lambda: _node_ready(ctx), 90, "kubelet", pids["kubelet"])
    pids["kube-proxy"] = ctx.start(
        "kube-proxy", [ctx.bin("kube-proxy"), f"--config={lay.proxy_config}"], None
    )
    apply(ctx, [
        *addons.coredns(coredns_image),
        *addons.kubelet_api_access(APISERVER_KUBELET_USER),
        *addons.kube_router_rbac(ROUTER_USER),
        *addons.local_path(helper_image, LOCAL_PATH_USER),
    ])  # fmt: skip
    pids["kube-router"] = ctx.start(
        "kube-router",
        [
            ctx.bin("kube-router"),
            f"--kubeconfig={ctx.kubeconfigs['kube-router']}",
            f"--hostname-override={ctx.node_name}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-ipv6=false",
            f"--service-cluster-ip-range={ctx.service_cidr}",
            f"--health-port={ctx.router_health_port}",
            "--metrics-port=0",
        ],
        None,
    )
    volumes = lay.root / "volumes"
    volumes.mkdir(exist_ok=True)
    lp_config = lay.root / "local-path.json"
    lp_config.write_text(addons.local_path_config(volumes))
    pids["local-path-provisioner"] = ctx.start(
        "local-path-provisioner",
        [
            ctx.bin("local-path-provisioner"),
            "start",
            f"--kubeconfig={ctx.kubeconfigs['local-path-provisioner']}",
            f"--config={lp_config}",
            f"--provisioner-name={addons.PROVISIONER}",
            f"--namespace={addons.LOCAL_PATH_NS}",
            f"--service-account-name={addons.LOCAL_PATH_SA}",
            "--configmap-name=local-path-config",
        ],
        None,
    )
    ctx.wait(
        "kube-proxy",
        lambda: _http_ok(f"http://127.0.0.1:{ctx.proxy_healthz_port}/healthz"),
        60,
        "kube-proxy",
        pids["kube-proxy"],
    )
    ctx.wait(
        "kube-router",
        lambda: _http_ok(f"http://127.0.0.1:{ctx.router_health_port}/healthz"),
        60,
        "kube-router",
        pids["kube-router"],
    )
    ctx.wait(
        "cluster DNS",
        lambda: _kubectl(ctx, "-n", "kube-system", "wait", "--for=condition=Available",
                         "deployment/coredns", "--timeout=1s").returncode == 0,
        120,
        "kubelet",
        pids["kubelet"],
    )  # fmt: skip


def _kubectl(
    ctx: NodeContext, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={ctx.kubeconfigs['admin']}", *args],
        capture_output=True, text=True, check=False, input=input,
    )  # fmt: skip


def apply(ctx: NodeContext, objects: list[dict[str, object]]) -> None:
    out = _kubectl(
        ctx, "apply", "--server-side", "--force-conflicts", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )  # fmt: skip
    if out.returncode != 0:
        raise NodeError(f"could not apply the node's add-ons: {out.stderr.strip()}")


def _node_ready(ctx: NodeContext) -> bool:
    out = _kubectl(ctx, "get", "node", ctx.node_name,
                   "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")  # fmt: skip
    return out.stdout.strip() == "True"


def remove_stale_pods(lay: Layout) -> None:
    """Containers a previous run left in the runtime (killed before it could clean up):
    their cluster is gone, so they are removed before the kubelet starts."""
    tasks = ctr(lay, "tasks", "list", "-q", check=False).stdout.split()
    for t in tasks:
        ctr(lay, "tasks", "kill", "-s", "SIGKILL", t, check=False)
    deadline = time.monotonic() + 10
    while tasks and time.monotonic() < deadline:
        for t in tasks:
            ctr(lay, "tasks", "delete", t, check=False)
        tasks = ctr(lay, "tasks", "list", "-q", check=False).stdout.split()
        time.sleep(0.1)
    for c in ctr(lay, "containers", "list", "-q", check=False).stdout.split():
        ctr(lay, "containers", "delete", c, check=False)


def down(root: Path, pids: dict[str, int], stop: Callable[[int, float], None]) -> None:
    """Stop the node's processes and take down what they leave: pods' containers, their
    network namespaces, volume mounts, and kube-proxy's and kube-router's rules."""
    lay = layout_of(root.parent)
    for name in HOST_PROCESSES:
        pid = pids.get(name)
        if pid is not None:
            stop(pid, 10.0)
    pid = pids.get("containerd")
    if pid is not None and Path(f"/proc/{pid}").exists():
        remove_stale_pods(lay)
        stop(pid, 10.0)
    host.remove_pod_network_leftovers()
    # The kubelet's volumes, and the sandboxes' /dev/shm and rootfs mounts in containerd's
    # state: whatever a stopped runtime did not take down itself.
    for tree in (lay.root, lay.containerd_state, lay.kubelet_dir):
        unmount_under(tree)
    # Their chains would go on DNATing and filtering for pods that are gone.
    host.remove_kube_rules()
    if LOCK.exists() and str(root) in LOCK.read_text():
        LOCK.unlink()


def unmount_under(path: Path) -> None:
    """Unmount every mount below ``path`` (the kubelet's volume tmpfs), deepest first."""
    resolved = str(path.resolve())
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4]
            if target == resolved or target.startswith(resolved + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
