"""What tests and benchmarks share: kubectl, polling, and the webhook service as a process.

Importable as ``harness`` with hack/ on sys.path (pytest's pythonpath, bench scripts).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import localcluster
from wallestars_api.lifecycle import TERMINAL
from wallestars_sdk.keys import derive_attempt_key, encode_key

REPO = Path(__file__).resolve().parent.parent


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

    def patch_status(self, kind: str, name: str, status: dict[str, Any]) -> str:
        """A merge patch of the status subresource, as a controller would write it."""
        return self(
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


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


SYSTEM_NS = "wallestars-system"
TERMINAL_PHASES = tuple(sorted(p.value for p in TERMINAL))
WEBHOOK_USER = f"system:serviceaccount:{SYSTEM_NS}:wallestars-webhooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fixture_site(port: int, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """tests/fixture_site.py as a process on HOST:PORT. Run as a module from the
    repository root, so it imports ``tests.servers`` whatever the caller's PYTHONPATH is."""
    return subprocess.Popen([sys.executable, "-m", "tests.fixture_site", str(port), host], cwd=REPO)


def token_kubeconfig(cluster: localcluster.Cluster, path: Path, namespace: str, sa: str) -> Path:
    """A kubeconfig that authenticates as a service account (a bound token, as in a pod)."""
    token = Kubectl(cluster.kubeconfig)(
        "create", "token", sa, "-n", namespace, "--duration=24h"
    ).strip()
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
                "current-context": "c",
            }
        )
    )
    return path


def install_api(cluster: localcluster.Cluster) -> None:
    """A fresh control plane made ready for the product: the CRDs (established) and the
    chart's RBAC for the operator and the webhook service."""
    k = Kubectl(cluster.kubeconfig)
    k("apply", "--server-side", "-f", str(REPO / "crds"))
    k("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    install_chart_rbac(cluster)


def install_chart_rbac(cluster: localcluster.Cluster) -> None:
    """The chart's RBAC for the operator and the webhook service, and the admission policy
    that narrows what the operator may patch, rendered by helm and applied."""
    k = Kubectl(cluster.kubeconfig)
    k.run("create", "namespace", SYSTEM_NS, check=False)
    helm = localcluster.bin_dirs()["helm"] / "helm"
    rendered = subprocess.run(
        [str(helm), "template", "wallestars", str(REPO / "charts" / "wallestars-agents"), "--namespace", SYSTEM_NS,
         "--show-only", "templates/operator-rbac.yaml", "--show-only", "templates/webhooks-rbac.yaml",
         "--show-only", "templates/operator-writes-policy.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    k.apply(rendered)


def scrape(url: str) -> str:
    """A Prometheus /metrics page (loopback only)."""
    return str(urllib.request.urlopen(url, timeout=5).read().decode())  # noqa: S310


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a /metrics page, or None if it is not there."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


@dataclass
class WebhookService:
    url: str
    masters: list[bytes]
    proc: subprocess.Popen[bytes]
    log: Path
    artifact_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    ops_url: str = ""  # health and metrics, plain HTTP (with TLS: WALLESTARS_OPS_PORT)

    def key(self, uid: str, attempt: int, master: int = 0) -> bytes:
        return derive_attempt_key(self.masters[master], uid, attempt)

    def callback_url(self, uid: str, attempt: int) -> str:
        return f"{self.url}/api/agent-callback?task={uid}&attempt={attempt}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the service's own /metrics (0 if absent)."""
        value = sample(scrape(f"{self.ops_url or self.url}/metrics"), name, **labels)
        return 0.0 if value is None else value

    def stop(self) -> None:
        stop_process(self.proc, 10)


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_service(
    cluster: localcluster.Cluster, tmp: Path, masters: list[bytes], host: str = "127.0.0.1",
    port: int = 0, api_url: str = "", **env: str,
) -> WebhookService:  # fmt: skip
    """The webhook service as a process on ``host`` (the real node's address for its
    pods to call back to), under the chart's RBAC for it. ``port``: this one (a restart
    keeps the callback URL), else a free one; ``api_url``: reach the API server there
    (hack/faultproxy.py), plain http."""
    tmp.mkdir(parents=True, exist_ok=True)
    keys = tmp / "master-keys"
    keys.write_text("\n".join(encode_key(m) for m in masters) + "\n")
    kubeconfig = token_kubeconfig(cluster, tmp / "kubeconfig", SYSTEM_NS, "wallestars-webhooks")
    if api_url:
        cfg = json.loads(kubeconfig.read_text())
        cfg["clusters"][0]["cluster"] = {"server": api_url}
        kubeconfig.write_text(json.dumps(cfg))
    port = port or free_port()
    full_env = {
        **os.environ,
        "WALLESTARS_HOST": host,
        "WALLESTARS_PORT": str(port),
        "WALLESTARS_KUBECONFIG": str(kubeconfig),
        "WALLESTARS_MASTER_KEYS_FILE": str(keys),
        "WALLESTARS_ARTIFACT_DIR": str(tmp / "artifacts"),
        "WALLESTARS_READINESS_INTERVAL_SECONDS": "1",
        **env,
    }
    log = tmp / "webhooks.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallestars_webhooks"],
        env=full_env,
        stdout=log.open("ab"),  # a restart in the same place goes on with the same log
        stderr=subprocess.STDOUT,
    )
    # With TLS (WALLESTARS_TLS_CERT_FILE) its readiness is read on the plain ops port.
    scheme = "https" if env.get("WALLESTARS_TLS_CERT_FILE") else "http"
    ops = f"http://{host}:{env.get('WALLESTARS_OPS_PORT') or port}"
    svc = WebhookService(
        f"{scheme}://{host}:{port}", masters, proc, log, tmp / "artifacts", full_env, ops
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"webhook service exited:\n{log.read_text()[-3000:]}")
        try:
            return bool(urllib.request.urlopen(f"{ops}/readyz", timeout=1).status == 200)  # noqa: S310
        except OSError:
            return False

    wait_for("the webhook service to be ready", ready, timeout=30)
    return svc


def dispatched_task(
    kubectl: Kubectl, name: str | None = None, attempt: int = 1, **spec: Any
) -> tuple[str, str]:
    """An AgentTask in phase Dispatched at ``attempt``, as the operator leaves it; (name, uid)."""
    name = name or f"t-{uuid.uuid4().hex[:8]}"
    kubectl.apply(
        {
            "apiVersion": "agents.wallestars.io/v1alpha1",
            "kind": "AgentTask",
            "metadata": {"name": name},
            "spec": {"agentRef": "fake", "type": "custom", "payload": {}, **spec},
        }
    )
    status = {"phase": "Dispatched", "attempt": attempt, "agent": "fake", "dispatchTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "attempts": [{"attempt": attempt, "agent": "fake"}]}  # fmt: skip
    kubectl.patch_status("agenttask", name, status)
    uid = kubectl.json("get", "agenttask", name)["metadata"]["uid"]
    return name, uid


def audit_events(
    cluster: localcluster.Cluster, namespace: str | None = None
) -> Iterator[dict[str, Any]]:
    """The API server's audit events of completed writes (optionally in one namespace)."""
    for line in (cluster.logs / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("stage") != "ResponseComplete":
            continue
        if namespace and (ev.get("objectRef") or {}).get("namespace") != namespace:
            continue
        yield ev


def audit_writes(
    cluster: localcluster.Cluster, user: str, namespace: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """Audit events of API writes by ``user`` (optionally on one object)."""
    return [
        ev
        for ev in audit_events(cluster, namespace)
        if ev["user"].get("username") == user
        and (not name or (ev.get("objectRef") or {}).get("name") == name)
    ]


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str
    env: dict[str, str] = field(default_factory=dict)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the operator's /metrics (NaN if absent)."""
        value = sample(scrape(self.metrics_url), name, **labels)
        return float("nan") if value is None else value

    def stop(self) -> None:
        stop_process(self.proc, 15)


def start_operator(
    cluster: localcluster.Cluster,
    tmp: Path,
    masters: list[bytes],
    callback_base: str,
    api_url: str | None = None,
    **env: str,
) -> OperatorProcess:
    """The operator as a process, under the chart's RBAC for it (a bound SA token), once
    it is live. ``api_url``: reach the API server there instead (hack/faultproxy.py),
    plain http."""
    op, up = launch_operator(cluster, tmp, masters, callback_base, api_url, **env)
    wait_for("the operator to be live", up, timeout=60)
    return op


def launch_operator(
    cluster: localcluster.Cluster,
    tmp: Path,
    masters: list[bytes],
    callback_base: str,
    api_url: str | None = None,
    **env: str,
) -> tuple[OperatorProcess, Callable[[], bool]]:
    """start_operator without the wait: the process, and a check of its liveness."""
    tmp.mkdir(parents=True, exist_ok=True)
    install_chart_rbac(cluster)
    kubeconfig = token_kubeconfig(cluster, tmp / "kubeconfig", SYSTEM_NS, "wallestars-operator")
    if api_url is not None:
        cfg = json.loads(kubeconfig.read_text())
        cfg["clusters"][0]["cluster"] = {"server": api_url}
        kubeconfig.write_text(json.dumps(cfg))
    keys = tmp / "master-keys"
    keys.write_text("\n".join(encode_key(m) for m in masters) + "\n")
    Kubectl(cluster.kubeconfig).run("create", "namespace", SYSTEM_NS, check=False)
    metrics_port, liveness_port = free_port(), free_port()
    full = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WALLESTARS_KUBECONFIG": str(kubeconfig),
        "WALLESTARS_MASTER_KEYS_FILE": str(keys),
        "WALLESTARS_CALLBACK_BASE_URL": callback_base,
        "WALLESTARS_LEASE_NAMESPACE": SYSTEM_NS,
        "WALLESTARS_METRICS_PORT": str(metrics_port),
        "WALLESTARS_LIVENESS_PORT": str(liveness_port),
        "WALLESTARS_CALLBACK_GRACE_SECONDS": "2",
        # The test functions listen on loopback over plain http.
        "WALLESTARS_INSECURE_DEVELOPMENT_ALLOW_PLAIN_HTTP": "true",
        # Notifications leave through it (the chart's image has it on its PATH).
        "WALLESTARS_SMOKESCREEN": str(localcluster.bin_dirs()["smokescreen"] / "smokescreen"),
        **env,
    }
    log = tmp / f"operator-{uuid.uuid4().hex[:6]}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallestars_operator"],
        env=full,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    op = OperatorProcess(proc, log, f"http://127.0.0.1:{metrics_port}/metrics", full)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{log.read_text()[-3000:]}")
        try:
            return bool(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{liveness_port}/healthz", timeout=1
                ).status
                == 200
            )
        except OSError:
            return False

    return op, up


# --- Agents and AgentTasks for operator tests ------------------------------------------


def credential_secret(kubectl: Kubectl, name: str, opt_in: bool = True, **data: str) -> None:
    """A Secret an Agent may name: with the opt-in label the operator requires
    (docs/operator.md, Secrets), or without it (``opt_in=False``) to see it refused."""
    labels = {"agents.wallestars.io/credential": "true"} if opt_in else {}
    kubectl.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
                   "stringData": data})  # fmt: skip


def http_agent(kubectl: Kubectl, url: str, name: str = "fn", slots: int = 10) -> None:
    credential_secret(kubectl, f"{name}-auth", authorization="Bearer test-function-token")
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"type": "cloud", "capabilities": ["api-test", "custom"], "concurrency": slots,
                 "cloud": {"provider": "http", "http": {"url": url, "authHeaderSecretRef": {"name": f"{name}-auth", "key": "authorization"}}}},
    })  # fmt: skip


def browser_agent(
    kubectl: Kubectl, command: list[str], name: str = "br", slots: int = 2, **browser: Any
) -> None:
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"type": "browser", "capabilities": ["screenshot", "custom"], "concurrency": slots,
                 "browser": {"image": "local/test-agent:dev", "command": command, **browser}},
    })  # fmt: skip


def task(kubectl: Kubectl, name: str, agent: str, behaviour: str = "succeed", **spec: Any) -> None:
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
        "spec": {"agentRef": agent, "type": "custom", "payload": {"data": {"behaviour": behaviour}}, **spec},
    })  # fmt: skip


def status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(kubectl.json("get", "agenttask", name).get("status") or {})


def phase_is(kubectl: Kubectl, name: str, *phases: str) -> Any:
    st = status(kubectl, name)
    return st if st.get("phase") in phases else None


def events(kubectl: Kubectl, name: str, kind: str = "") -> list[str]:
    """The reasons of the Events about the object ``name`` (of ``kind``, if given), in order."""
    selector = f"regarding.name={name}" + (f",regarding.kind={kind}" if kind else "")
    items = kubectl.json("get", "events.events.k8s.io", f"--field-selector={selector}")["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("eventTime") or "")]


def reader_token(kubectl: Kubectl, sa: str = "artifact-reader") -> str:
    """A bearer token of a service account that may get AgentTasks in kubectl's namespace
    (what downloading their artifacts needs)."""
    if kubectl.run("get", "serviceaccount", sa, check=False).returncode != 0:
        kubectl("create", "serviceaccount", sa)
        kubectl("create", "role", sa, "--verb=get", "--resource=agenttasks.agents.wallestars.io")
        kubectl("create", "rolebinding", sa, f"--role={sa}",
                f"--serviceaccount={kubectl.namespace}:{sa}")  # fmt: skip
    return kubectl("create", "token", sa).strip()


def lighthouse_cli() -> Path:
    """Lighthouse's cli as hack/setup.sh installs it (keyed by its lock file)."""
    lock = REPO / "agent_images" / "lighthouse" / "package-lock.json"
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    return (Path.home() / ".cache" / "wallestars" / f"lighthouse-{key}" / "node_modules"
            / "lighthouse" / "cli" / "index.js")  # fmt: skip


def download(base_url: str, uri: str, token: str, context: ssl.SSLContext | None = None) -> bytes:
    """An artifact's bytes from the webhook service, as a user allowed to read the task
    (``context``: how its https certificate is trusted)."""
    # With WALLESTARS_PUBLIC_URL set (the chart sets it) the URI is already absolute.
    url = uri if uri.startswith(("http://", "https://")) else base_url + uri
    req = urllib.request.Request(  # noqa: S310 (the tests' own http URL)
        url, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30, context=context) as r:  # noqa: S310 (the tests' loopback URL)
        return bytes(r.read())


def deploy_test_function(kubeconfig: Path, namespace: str, image: str) -> str:
    """tests/agents/http_function.py as a pod on a real node (our service image has its
    Python, aiohttp and the SDK; the script comes in a ConfigMap), behind a Service:
    an `http` Agent's function inside the cluster, calling back through the webhook
    Service like any in-cluster function. Returns its URL."""
    k = Kubectl(kubeconfig, namespace)
    script = (REPO / "tests" / "agents" / "http_function.py").read_text()
    labels = {"app": "test-function"}
    k.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-function"},
             "data": {"http_function.py": script}})  # fmt: skip
    k.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "test-function", "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "function", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "/fn/http_function.py", "8080", "0.0.0.0"],  # noqa: S104 (its pod's own address)
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "fn", "mountPath": "/fn"}, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 (an emptyDir)
            }],
            "volumes": [{"name": "fn", "configMap": {"name": "test-function"}},
                        {"name": "tmp", "emptyDir": {}}],
        },
    })  # fmt: skip
    k.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "test-function"},
             "spec": {"selector": labels, "ports": [{"port": 8080}]}})  # fmt: skip
    k("wait", "--for=condition=Ready", "pod/test-function", "--timeout=90s")
    return f"http://test-function.{namespace}.svc:8080/"


def run_pod_to_end(k: Kubectl, manifest: dict[str, Any], timeout: float = 120) -> tuple[str, str]:
    """Create a pod that runs once and wait until it ends; (phase, logs)."""
    k.apply(manifest)
    name = manifest["metadata"]["name"]
    phase = wait_for(
        f"pod {name} to end",
        lambda: (
            p
            if (p := k.json("get", "pod", name)["status"].get("phase")) in ("Succeeded", "Failed")
            else None
        ),
        timeout=timeout,
    )
    return str(phase), k("logs", name)
