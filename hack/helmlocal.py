"""The Helm chart installed on the local control plane, as a user would install it.

`helm install` with local values: the node stand-in runs the chart's operator and webhook
pods as processes (their command is this checkout's Python, since no image can be
pulled here), each under its own service account's bound token; every pod is
127.0.0.1, so the ports are free ones picked at install time and one replica of each
runs (two would share the address). Everything else is the chart as shipped.
Used by the demo (hack/demo.py) and tests/integration/test_chart.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import localcluster
from harness import REPO, Kubectl, free_port, wait_for

CHART = REPO / "charts" / "wallestars-agents"


def helm_bin() -> Path:
    return localcluster.bin_dirs()["helm"] / "helm"


def local_values(browser_namespaces: list[str]) -> dict[str, Any]:
    """Values for this machine: commands from this checkout, free loopback ports."""
    py = sys.executable
    port, metrics, liveness = free_port(), free_port(), free_port()
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
            "publicURL": url,
        },
        # No storage provisioner here: the artifact store is an emptyDir of the pod.
        "artifacts": {"persistence": {"enabled": False}},
        "networkPolicies": {"browserNamespaces": browser_namespaces},
        "tests": {"webhooksURL": url, "command": [py, "-c"]},
    }


@dataclass
class Release:
    name: str
    namespace: str
    kubeconfig: Path
    values: dict[str, Any]

    @property
    def webhooks_url(self) -> str:
        return str(self.values["webhooks"]["publicURL"])

    @property
    def operator_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.values['operator']['metricsPort']}/metrics"

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
        --wait sees pods Ready as soon as their process runs: the stand-in has no probes)."""

        def up(url: str) -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(
            "the webhook service to be ready", lambda: up(self.webhooks_url + "/readyz"), timeout
        )
        wait_for("the operator's metrics", lambda: up(self.operator_metrics_url), timeout)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--wait", "--timeout", "120s", check=False)


def install(
    cluster: localcluster.Cluster, name: str = "wallestars", namespace: str = "wallestars-system",
    browser_namespaces: tuple[str, ...] = (),
) -> Release:  # fmt: skip
    """Install the chart (CRDs included, from its crds/) into a Pod Security `restricted`
    namespace and wait until both services answer."""
    k = Kubectl(cluster.kubeconfig)
    for ns in (namespace, *browser_namespaces):  # the chart puts NetworkPolicies in the latter
        k.run("create", "namespace", ns, check=False)
        k("label", "--overwrite", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    rel = Release(name, namespace, cluster.kubeconfig, local_values(list(browser_namespaces)))
    t0 = time.monotonic()
    rel.install()
    print(f"helm install {name}: serving after {time.monotonic() - t0:.1f} s", flush=True)
    return rel
