"""The Helm chart installed on the local control plane, as a user would install it.

`helm install` with local values: the node stand-in runs the chart's operator and webhook
pods as processes (their command is this checkout's Python, since no image can be
pulled here), each under its own service account's bound token; every pod is
127.0.0.1, so the ports are free ones picked at install time and one replica of each
runs (two would share the address). Everything else is the chart as shipped.
Used by the demo (hack/demo.py) and tests/integration/test_chart.py.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import localcluster
from harness import REPO, Kubectl, free_port, wait_for
from realnode import images, node

CHART = REPO / "charts" / "wallestars-agents"


def helm_bin() -> Path:
    return localcluster.bin_dirs()["helm"] / "helm"


def local_values(browser_namespaces: list[str]) -> dict[str, Any]:
    """Values for this machine: commands from this checkout, free loopback ports."""
    py = sys.executable
    port, metrics, liveness, ops = free_port(), free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    return {
        "operator": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # a second pod would find the ports taken
            "command": [py, "-m", "wallestars_operator"],
            "callbackBaseURL": url,
            "metricsPort": metrics,
            "livenessPort": liveness,
            "extraEnv": [{"name": "WALLESTARS_CALLBACK_GRACE_SECONDS", "value": "2"}],
            # The local functions (tests, demo) listen on loopback over plain http.
            "insecureDevelopmentAllowPlainHTTP": True,
        },
        "webhooks": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "command": [py, "-m", "wallestars_webhooks"],
            "port": port,
            "opsPort": ops,
            "publicURL": url,
            # The stand-in mounts no Secret volumes: plain HTTP on loopback.
            "tls": {"enabled": False},
        },
        # No storage provisioner here: the artifact store is an emptyDir of the pod.
        "artifacts": {"persistence": {"enabled": False}},
        "networkPolicies": {"browserNamespaces": browser_namespaces},
        "tests": {"webhooksURL": url, "command": [py, "-c"]},
    }


def real_values(
    tags: dict[str, str],
    browser_namespaces: list[str],
    reachable: list[tuple[str, int]],
    api_server: tuple[str, int],
    function_namespaces: list[str],
) -> dict[str, Any]:
    """Values for the real node: the chart's production values with only our images (built
    here, never pulled), and the development escape hatches this machine needs: the test
    function is plain http, and ``reachable`` (host, port) services on the node's address
    (the fixture site, the test function) may be reached by browser pods and the operator.
    ``api_server`` is where the kubernetes Service's endpoint is: kube-router judges
    egress after the Service's DNAT, so the policy names that address and port, as the
    chart's values.yaml tells every user whose plugin does so. ``function_namespaces``
    hold in-cluster functions of `http` Agents: the operator may call them and they may
    call back (networkPolicies.callbackNamespaces). Everything else as shipped: 2+2 replicas, PVC artifacts, NetworkPolicies, the
    callback URL the webhook Service's cluster DNS name."""
    repository, tag = tags["agents"].rsplit(":", 1)
    repository, image = repository.rsplit("/", 1)
    extra = [{"to": [{"ipBlock": {"cidr": f"{host}/32"}}],
              "ports": [{"port": port, "protocol": "TCP"}]} for host, port in reachable]  # fmt: skip
    public_443 = {"to": [{"publicAddresses": True}], "ports": [{"port": 443, "protocol": "TCP"}]}
    functions = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}]}
                 for ns in function_namespaces]  # fmt: skip
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "operator": {
            "image": image,
            "browserImage": tags["browser-agent"],
            "insecureDevelopmentAllowPlainHTTP": True,
        },
        "webhooks": {"image": image},
        "networkPolicies": {
            "apiServer": {"cidrs": [f"{api_server[0]}/32"], "ports": [443, api_server[1]]},
            "browserNamespaces": browser_namespaces,
            "browserEgress": extra,
            "operatorEgress": [public_443, *extra, *functions],
            "callbackNamespaces": function_namespaces,
        },
    }


@dataclass
class Release:
    name: str
    namespace: str
    kubeconfig: Path
    values: dict[str, Any]

    @property
    def real_node(self) -> bool:
        return "publicURL" not in self.values.get("webhooks", {})

    @property
    def tls(self) -> bool:
        return bool(self.values.get("webhooks", {}).get("tls", {}).get("enabled", True))

    @property
    def webhooks_url(self) -> str:
        """Where this machine reaches the webhook service: on the real node its Service's
        cluster IP (kube-proxy routes the host's connections too), over HTTPS by default."""
        if self.real_node:
            svc = self._kubectl().json("get", "service", f"{self.name}-webhooks")
            scheme = "https" if self.tls else "http"
            return f"{scheme}://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
        return str(self.values["webhooks"]["publicURL"])

    @property
    def ops_url(self) -> str:
        """The webhook service's plain health and metrics port."""
        if self.real_node:
            svc = self._kubectl().json("get", "service", f"{self.name}-webhooks")
            [port] = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "metrics"]
            return f"http://{svc['spec']['clusterIP']}:{port}"
        return self.webhooks_url

    def tls_context(self) -> ssl.SSLContext | None:
        """Trusts the chart's CA (from the release's TLS Secret). The host name is not
        checked: this machine reaches the Service by IP, while the certificate names its
        DNS names (the chart's `helm test` pod checks those)."""
        if not (self.real_node and self.tls):
            return None
        secret = self._kubectl().json("get", "secret", f"{self.name}-webhooks-tls")
        ctx = ssl.create_default_context(cadata=base64.b64decode(secret["data"]["ca.crt"]).decode())
        ctx.check_hostname = False
        return ctx

    @property
    def operator_metrics_url(self) -> str:
        """The acting operator's metrics (on the real node: the Lease holder's pod)."""
        if self.real_node:
            return f"http://{self.leader_ip()}:9090/metrics"
        return f"http://127.0.0.1:{self.values['operator']['metricsPort']}/metrics"

    def _kubectl(self) -> Kubectl:
        return Kubectl(self.kubeconfig, self.namespace)

    def pod_ips(self, component: str) -> list[str]:
        pods = self._kubectl().json(
            "get", "pods", "-l", f"app.kubernetes.io/component={component}"
        )["items"]
        return [p["status"]["podIP"] for p in pods if p["status"].get("podIP")]

    def leader_ip(self) -> str:
        """The pod IP of the operator replica that holds the Lease (its identity starts
        with the pod's host name, which is the pod's name)."""
        k = self._kubectl()
        lease = self.values.get("operator", {}).get("leaseName", "wallestars-operator")
        holder = k.json("get", "lease", lease)["spec"].get("holderIdentity", "")
        if not holder:
            raise RuntimeError("no operator replica holds the lease yet")
        for p in k.json("get", "pods", "-l", "app.kubernetes.io/component=operator")["items"]:
            if holder.startswith(p["metadata"]["name"]):
                return str(p["status"]["podIP"])
        raise RuntimeError(f"no operator pod holds the lease ({holder})")

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(helm_bin()), "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and out.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out

    def install(self, *extra: str) -> None:
        """`helm upgrade --install`: a first install, or the release an earlier run left
        (`make demo` again on the dev cluster, whose release keeps running)."""
        self.upgrade("--install", *extra)

    def upgrade(self, *extra: str) -> None:
        values = self.kubeconfig.parent / f"values-{self.name}.json"
        values.write_text(json.dumps(self.values))
        self.helm(
            "upgrade",
            self.name,
            str(CHART),
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "180s",
            *extra,
        )
        self.wait_serving()

    def wait_serving(self, timeout: float = 90) -> None:
        """Until the webhook service is ready and the operator's metrics answer (helm's
        --wait sees pods Ready as soon as their process runs: the stand-in has no probes;
        on the real node, until a replica holds the Lease)."""
        if self.real_node:
            wait_for("an operator replica to hold the lease", lambda: _quiet(self.leader_ip),
                     timeout)  # fmt: skip

        def up(url: str) -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the webhook service to be ready", lambda: up(self.ops_url + "/readyz"), timeout)
        wait_for("the operator's metrics", lambda: up(self.operator_metrics_url), timeout)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--wait", "--timeout", "120s", check=False)


def _quiet(f: Any) -> bool:
    try:
        return bool(f())
    except (RuntimeError, AssertionError, KeyError):
        return False


def install(
    cluster: localcluster.Cluster, name: str = "wallestars", namespace: str = "wallestars-system",
    browser_namespaces: tuple[str, ...] = (), reachable: tuple[tuple[str, int], ...] = (),
    function_namespaces: tuple[str, ...] = (), console: bool = False,
) -> Release:  # fmt: skip
    """Install the chart (CRDs included, from its crds/) into a Pod Security `restricted`
    namespace and wait until both services answer. On a real node, with our images
    (built and imported here first) and ``reachable`` services of the host opened to it."""
    k = Kubectl(cluster.kubeconfig)
    for ns in (namespace, *browser_namespaces):  # the chart puts NetworkPolicies in the latter
        k.run("create", "namespace", ns, check=False)
        k("label", "--overwrite", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    if cluster.real_node:
        tags = images.ensure(node.layout_of(cluster.dir), ["agents", "browser-agent"])
        values = real_values(
            tags, list(browser_namespaces), list(reachable),
            (cluster.host, cluster.ports.apiserver), list(function_namespaces),
        )  # fmt: skip
    else:
        values = local_values(list(browser_namespaces))
    if console:
        values["console"] = {"enabled": True}
    rel = Release(name, namespace, cluster.kubeconfig, values)
    t0 = time.monotonic()
    rel.install()
    print(f"helm install {name}: serving after {time.monotonic() - t0:.1f} s", flush=True)
    return rel
