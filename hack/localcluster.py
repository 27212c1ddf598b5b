"""A real Kubernetes control plane on loopback, for development and tests.

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built by
hack/build-tools.sh) and the node stand-in (hack/node_standin) on 127.0.0.1 with
generated certificates, a service-account signing key and RBAC, and writes an admin
kubeconfig to ``<dir>/admin.kubeconfig``. ``down`` stops every process it started
and checks that no port is left bound.

    python hack/localcluster.py up [--dir DIR] [--no-node]
    python hack/localcluster.py down [--dir DIR]
    python hack/localcluster.py status [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

from realnode import host as node_host  # noqa: E402
from realnode import node as rnode  # noqa: E402
from realnode.config import NODE_IP  # noqa: E402

DEFAULT_DIR = REPO / ".cluster" / "dev"
NODE_NAME = "wallestars-node"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The order components start in, and the reverse order they stop in.
# "node" is the stand-in; containerd, kubelet and kube-proxy are the real node.
COMPONENTS = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
    "node", "containerd", "kubelet", "kube-proxy", "kube-router", "local-path-provisioner",
)  # fmt: skip
REAL_NODE = ("containerd", "kubelet", "kube-proxy", "kube-router", "local-path-provisioner")
# Who the node's processes speak as (one client certificate and kubeconfig each).
NODE_IDENTITIES = ("node", "kube-proxy", "kube-router", "local-path-provisioner")


class ClusterError(RuntimeError):
    """The control plane could not be built, started or stopped."""


@dataclass
class Ports:
    etcd: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 20257
    scheduler: int = 20259
    kubelet: int = 20250
    kubelet_healthz: int = 20248
    proxy_healthz: int = 20256
    proxy_metrics: int = 20249
    router_health: int = 20244

    @classmethod
    def free(cls) -> Ports:
        """Ports the kernel says are free now, for a second cluster beside a dev one."""
        socks = [socket.socket() for _ in fields(cls)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


@dataclass
class State:
    """What ``up`` started, kept in ``<dir>/state.json`` so ``down`` can stop it."""

    ports: Ports
    pids: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"
    argv: dict[str, list[str]] = field(default_factory=dict)  # to start one again

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(
            ports=Ports(**raw["ports"]),
            pids=dict(raw["pids"]),
            host=raw.get("host", "127.0.0.1"),
            argv=dict(raw.get("argv", {})),
        )


@dataclass
class Cluster:
    """A handle on a local control plane in ``dir``."""

    dir: Path
    ports: Ports
    # Where the API server listens: loopback, or the real node's address (pods reach the
    # API server through the kubernetes Service, which cannot point at loopback).
    host: str = "127.0.0.1"

    @property
    def real_node(self) -> bool:
        return self.host != "127.0.0.1"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports.apiserver}"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def env(self) -> dict[str, str]:
        """Environment for kubectl and clients pointed at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def bin_dirs() -> dict[str, Path]:
    """Build (or find in the cache) the Go binaries; map binary name -> directory."""
    out = subprocess.run(
        ["bash", str(HACK / "build-tools.sh")], check=True, capture_output=True, text=True
    )
    dirs = [Path(line) for line in out.stdout.split()]
    found: dict[str, Path] = {}
    for d in dirs:
        for exe in d.iterdir():
            found[exe.name] = d
    return found


# --- certificates -------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(pki: Path, name: str, subject: str, usage: str, sans: str = "") -> None:
    # Kept across restarts of the same dir, unless its names changed since it was made.
    names = pki / f"{name}.sans"
    if (pki / f"{name}.crt").exists() and (
        not sans or (names.exists() and names.read_text() == sans)
    ):
        return
    names.write_text(sans)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    req = [
        "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
        "-addext", f"extendedKeyUsage={usage}",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
    ]  # fmt: skip
    if sans:
        req += ["-addext", f"subjectAltName={sans}"]
    _openssl(*req, cwd=pki)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "825", "-copy_extensions", "copyall",
        "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip
    (pki / f"{name}.csr").unlink()


def make_pki(pki: Path) -> None:
    """A CA and one certificate per identity. Kept across restarts of the same dir."""
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
        _openssl(
            "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=wallestars-local-ca",
            "-days", "3650", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            cwd=pki,
        )  # fmt: skip
    api_sans = ",".join(
        [
            "IP:127.0.0.1",
            "IP:10.0.0.1",
            f"IP:{NODE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    _leaf(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", api_sans)
    _leaf(pki, "admin", "/O=system:masters/CN=wallestars-admin", "clientAuth")
    _leaf(pki, "controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    _leaf(pki, "scheduler", "/CN=system:kube-scheduler", "clientAuth")
    # The node stand-in speaks as a real kubelet does: Node authorizer + NodeRestriction.
    _leaf(pki, "node", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
    _leaf(
        pki, "kubelet-serving", f"/CN=system:node:{NODE_NAME}", "serverAuth",
        f"IP:127.0.0.1,IP:{NODE_IP}",
    )  # fmt: skip
    # The real node's host processes: kube-proxy (bound to system:node-proxier by the
    # default RBAC), kube-router and local-path-provisioner (realnode/addons.py's RBAC).
    for ident in ("kube-proxy", "kube-router", "local-path-provisioner"):
        _leaf(pki, ident, f"/CN=system:{ident}", "clientAuth")
    _leaf(pki, "apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", "clientAuth")
    if not (pki / "sa.key").exists():
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, pki: Path, identity: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "wallestars-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(pki / f"{identity}.crt"),
                    "client-key": str(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "wallestars-local",
                "context": {"cluster": "wallestars-local", "user": identity},
            }
        ],
        "current-context": "wallestars-local",
    }
    # JSON is valid YAML, and every client reads it.
    path.write_text(json.dumps(config, indent=2))


# --- processes ----------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _stop_pid(pid: int, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    raise ClusterError(f"process {pid} survived SIGKILL")


def _start(cluster: Cluster, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    log = (cluster.logs / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group, so down stops its children too
        cwd=cluster.dir,
    )
    log.close()
    return proc.pid


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _get(url: str, ctx: ssl.SSLContext) -> int:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as r:  # noqa: S310 (https, loopback)
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return 0


def _wait(
    what: str, check: Callable[[], bool], timeout: float, cluster: Cluster, log: str, pid: int
) -> None:
    """Wait for ``check``; fail at once if the component's process has died."""
    deadline = time.monotonic() + timeout
    problem = f"not ready after {timeout:.0f}s"
    while time.monotonic() < deadline:
        if check():
            return
        if not pid_alive(pid):
            problem = "exited"
            break
        time.sleep(0.1)
    tail = ""
    with contextlib.suppress(FileNotFoundError):
        tail = (cluster.logs / f"{log}.log").read_text()[-3000:]
    raise ClusterError(f"{what} {problem}; end of {cluster.logs / log}.log:\n{tail}")


def _healthz(port: int, ctx: ssl.SSLContext) -> Callable[[], bool]:
    return lambda: _get(f"https://127.0.0.1:{port}/healthz", ctx) == 200


def _kubectl_ok(cluster: Cluster, *args: str) -> bool:
    out = subprocess.run(
        ["kubectl", *args], env=cluster.env(), capture_output=True, text=True, check=False
    )
    return out.returncode == 0


def up(
    dir: Path = DEFAULT_DIR,
    ports: Ports | None = None,
    node: bool = True,
    audit: bool | str = False,
    node_args: tuple[str, ...] = (),
    profiling: bool = False,
    real_node: bool = False,
) -> Cluster:
    """Start a fresh control plane in ``dir`` (stopping any left there before), with the
    node stand-in (``node``) or a real node (``real_node``: kubelet, containerd, CNI).
    ``audit``: an audit log of API writes; ``"status-bodies"``: with the bodies of
    AgentTask status writes too."""
    dir = dir.resolve()
    down(dir)  # whatever a crashed run left behind in this dir goes first
    ports = ports or Ports()
    host = NODE_IP if real_node else "127.0.0.1"
    if real_node:
        node_host.prepare()  # the node's address must exist before anything binds it
    for name, port in asdict(ports).items():
        if _port_open(port) or _port_open(port, host):
            raise ClusterError(f"port {port} ({name}) is already in use on {host}")
    cluster = Cluster(dir=dir, ports=ports, host=host)
    bins = bin_dirs()
    for sub in ("etcd-data", "node"):
        shutil.rmtree(dir / sub, ignore_errors=True)
    shutil.rmtree(cluster.logs, ignore_errors=True)
    cluster.logs.mkdir(parents=True)
    make_pki(cluster.pki)
    pki = cluster.pki
    write_kubeconfig(cluster.kubeconfig, cluster.server, pki, "admin")
    for ident in ("controller-manager", "scheduler", *NODE_IDENTITIES):
        write_kubeconfig(dir / f"{ident}.kubeconfig", cluster.server, pki, ident)
    state = State(ports=ports, host=host)
    state_file = dir / "state.json"

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        state.pids[name] = _start(cluster, name, argv, env)
        state.argv[name] = argv
        state.save(state_file)
        return state.pids[name]

    try:
        p = ports
        start(
            "etcd",
            [
                str(bins["etcd"] / "etcd"),
                "--name=local",
                f"--data-dir={dir / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
                f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-cluster=local=http://127.0.0.1:{p.etcd_peer}",
                # A throwaway cluster: durability across power loss buys nothing here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        _wait("etcd", lambda: _port_open(p.etcd), 20, cluster, "etcd", state.pids["etcd"])
        api = [
            str(bins["kube-apiserver"] / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p.etcd}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={p.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={ISSUER}",
            f"--api-audiences={ISSUER}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=false",
            f"--profiling={str(profiling).lower()}",
        ]
        if not real_node:
            # The endpoint reconciler refuses loopback addresses; the stand-in's pods reach
            # the API server through KUBERNETES_SERVICE_HOST=127.0.0.1, not the Service.
            api.append("--endpoint-reconciler-type=none")
        if audit:
            policy = dir / "audit-policy.yaml"
            text = AUDIT_POLICY
            if audit == "status-bodies":
                text = text.replace("rules:\n", "rules:\n" + AUDIT_STATUS_BODIES)
            policy.write_text(text)
            api += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={cluster.logs / 'audit.log'}",
                "--audit-log-format=json",
                # Blocking: an event is on disk before the request returns, so a test
                # can count writes the moment its requests are answered.
                "--audit-log-mode=blocking",
            ]
        start("kube-apiserver", api)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        _wait(
            "kube-apiserver",
            lambda: _get(f"{cluster.server}/readyz", ctx) == 200,
            60,
            cluster,
            "kube-apiserver",
            state.pids["kube-apiserver"],
        )
        start(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"] / "kube-controller-manager"),
                f"--kubeconfig={dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                # Job throughput is what this project exercises; the defaults are for big
                # clusters sharing an API server with many other controllers.
                "--concurrent-job-syncs=20",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
            ],
        )
        start(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"] / "kube-scheduler"),
                f"--kubeconfig={dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                "--leader-elect=false",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for comp, port in (
            ("kube-controller-manager", p.controller_manager),
            ("kube-scheduler", p.scheduler),
        ):
            _wait(
                comp,
                _healthz(port, insecure),
                60,
                cluster,
                comp,
                state.pids[comp],
            )
        # The service-account controller makes `default` in each namespace; pods need it.
        _wait(
            "service accounts",
            lambda: _kubectl_ok(cluster, "get", "serviceaccount", "default", "-n", "default"),
            60,
            cluster,
            "kube-controller-manager",
            state.pids["kube-controller-manager"],
        )
        if real_node:
            rnode.up(
                rnode.NodeContext(
                    root=dir / "node",
                    bins=bins,
                    kubeconfigs={
                        "admin": cluster.kubeconfig,
                        **{i: dir / f"{i}.kubeconfig" for i in NODE_IDENTITIES},
                    },
                    pki=pki,
                    node_name=NODE_NAME,
                    service_cidr=SERVICE_CIDR,
                    kubelet_port=p.kubelet,
                    kubelet_healthz_port=p.kubelet_healthz,
                    proxy_healthz_port=p.proxy_healthz,
                    proxy_metrics_port=p.proxy_metrics,
                    router_health_port=p.router_health,
                    start=start,
                    wait=lambda what, check, timeout, log, pid: _wait(
                        what, check, timeout, cluster, log, pid
                    ),
                ),
                state.pids,
            )
            state.save(state_file)
        elif node:
            start(
                "node",
                [
                    sys.executable,
                    "-m",
                    "node_standin",
                    f"--kubeconfig={dir / 'node.kubeconfig'}",
                    f"--node-name={NODE_NAME}",
                    f"--root={dir / 'node'}",
                    f"--kubelet-port={p.kubelet}",
                    f"--tls-cert={pki / 'kubelet-serving.crt'}",
                    f"--tls-key={pki / 'kubelet-serving.key'}",
                    f"--client-ca={pki / 'ca.crt'}",
                    f"--apiserver-port={p.apiserver}",
                    # Pods run local programs: this repository and its Python must stay
                    # visible to them even under an emptyDir on /tmp.
                    f"--keep-visible={REPO}",
                    f"--keep-visible={sys.prefix}",
                    f"--keep-visible={sys.base_prefix}",
                    *node_args,
                ],
                env={**os.environ, "PYTHONPATH": str(HACK)},
            )
            _wait(
                "node stand-in",
                lambda: _kubectl_ok(
                    cluster, "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=1s"
                ),
                60,
                cluster,
                "node",
                state.pids["node"],
            )
    except BaseException:
        down(dir)
        raise
    return cluster


def down(dir: Path = DEFAULT_DIR) -> None:
    """Stop everything ``up`` started in ``dir``; no process or port is left behind."""
    dir = dir.resolve()
    state_file = dir / "state.json"
    state = State.load(state_file)
    if state is None:
        return
    if any(name in state.pids for name in REAL_NODE):
        rnode.down(
            dir / "node",
            state.pids,
            lambda pid, grace: _stop_pid(pid, grace) if pid_alive(pid) else None,
        )
    for name in reversed(COMPONENTS):
        pid = state.pids.get(name)
        if pid is not None and pid_alive(pid):
            # The node stand-in stops its pods' processes on SIGTERM; give it time to.
            _stop_pid(pid, grace=15.0 if name == "node" else 10.0)
    busy = [
        port
        for port in asdict(state.ports).values()
        if _port_open(port) or _port_open(port, state.host)
    ]
    if busy:
        raise ClusterError(f"ports still bound after stopping the cluster: {busy}")
    state_file.unlink()


def restart_apiserver(
    cluster: Cluster, kill: bool = True, extra_args: tuple[str, ...] = ()
) -> float:
    """Stop the API server (SIGKILL, or SIGTERM with ``kill=False``) and start it again
    with the same flags (and ``extra_args`` after them, kept for later restarts), as a
    crash or a control-plane upgrade would; seconds until it is ready again."""
    state_file = cluster.dir / "state.json"
    state = State.load(state_file)
    assert state is not None and "kube-apiserver" in state.argv, "no API server to restart"
    t0 = time.monotonic()
    pid = state.pids["kube-apiserver"]
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _stop_pid(pid, grace=10.0)
    # A killed Go process's leader shows as a zombie while its other threads still hold
    # the listening socket: wait until the port is free.
    deadline = time.monotonic() + 10
    while _port_open(state.ports.apiserver, state.host) and time.monotonic() < deadline:
        time.sleep(0.05)
    state.argv["kube-apiserver"] = [*state.argv["kube-apiserver"], *extra_args]
    state.pids["kube-apiserver"] = _start(cluster, "kube-apiserver", state.argv["kube-apiserver"])
    state.save(state_file)
    ctx = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    ctx.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    _wait("kube-apiserver", lambda: _get(f"{cluster.server}/readyz", ctx) == 200, 60, cluster,
          "kube-apiserver", state.pids["kube-apiserver"])  # fmt: skip
    return time.monotonic() - t0


def status(dir: Path = DEFAULT_DIR) -> dict[str, bool]:
    state = State.load(dir.resolve() / "state.json")
    if state is None:
        return {}
    return {name: pid_alive(pid) for name, pid in state.pids.items()}


# Records every write to the API (not reads) at Metadata level: enough to count
# API writes per task in benchmarks without slowing the server with bodies.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""
# AgentTask status writes with the stored object: every phase each task went through,
# from every writer (bench/soak.py counts terminal transitions from it).
AUDIT_STATUS_BODIES = """\
  - level: RequestResponse
    verbs: ["update", "patch"]
    resources:
      - group: agents.wallestars.io
        resources: ["agenttasks/status"]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--no-node", action="store_true", help="do not start the node stand-in")
    parser.add_argument("--audit", action="store_true", help="write an audit log of API writes")
    parser.add_argument(
        "--real-node", action="store_true", help="a real node (kubelet, containerd) for pods"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            cluster = up(
                args.dir, node=not args.no_node, audit=args.audit, real_node=args.real_node
            )
            print(f"ready in {time.monotonic() - t0:.1f}s")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            down(args.dir)
            print("stopped")
        else:
            for name, alive in status(args.dir).items():
                print(f"{name:26} {'running' if alive else 'stopped'}")
    except ClusterError as e:
        print(f"localcluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
