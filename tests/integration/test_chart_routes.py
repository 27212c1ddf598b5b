"""The chart's objects for other projects' APIs, checked by the real API server against
those projects' own CRDs: cert-manager's Certificate, Gateway API's HTTPRoute and
BackendTLSPolicy (and the built-in Ingress). Server-side dry runs: schema, CEL rules
and defaults are the API server's, not ours. The CRDs come from the projects' pinned Go
modules (the module proxy is reachable here; the download is cached in GOMODCACHE)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import localcluster
import pytest
import yaml
from harness import REPO, Kubectl
from helmlocal import CHART, helm_bin

pytestmark = pytest.mark.cluster

GATEWAY_API = "sigs.k8s.io/gateway-api@v1.6.3"
CERT_MANAGER = "github.com/cert-manager/cert-manager@v1.21.2"


def module_dir(module: str) -> Path:
    out = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True,
                         text=True, check=True, timeout=300,
                         env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"})  # fmt: skip
    return Path(json.loads(out.stdout)["Dir"])


@pytest.fixture(scope="module")
def third_party_crds(cluster: localcluster.Cluster) -> None:
    gw = module_dir(GATEWAY_API) / "config" / "crd" / "standard"
    cm = module_dir(CERT_MANAGER) / "deploy" / "crds"
    files = [
        gw / f"gateway.networking.k8s.io_{k}.yaml"
        for k in (
            "gatewayclasses",
            "gateways",
            "httproutes",
            "backendtlspolicies",
            "referencegrants",
        )
    ]
    files += [cm / f"cert-manager.io_{k}.yaml" for k in ("certificates", "issuers", "clusterissuers")]  # fmt: skip
    k = Kubectl(cluster.kubeconfig)
    for f in files:
        k("apply", "--server-side", "-f", str(f))
    k("wait", "--for=condition=Established", "--timeout=60s", "crd",
      "httproutes.gateway.networking.k8s.io", "backendtlspolicies.gateway.networking.k8s.io",
      "certificates.cert-manager.io")  # fmt: skip


def rendered(namespace: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(helm_bin()), "template", "wallestars", str(CHART), "-n", namespace, *args],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def dry_run(kubectl: Kubectl, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)


def test_the_tls_example_and_an_httproute_are_valid_for_their_apis(
    third_party_crds: None, kubectl: Kubectl
) -> None:
    ns = str(kubectl.namespace)
    docs = rendered(ns, "-f", str(REPO / "examples" / "values-tls.yaml"),
                    "--set", "webhooks.httpRoute.enabled=true",
                    "--set", "webhooks.httpRoute.parentRefs[0].name=public-gw",
                    "--set", "webhooks.httpRoute.hostnames[0]=callbacks.wallestars.example.com",
                    "--set", "webhooks.httpRoute.backendCAConfigMap=wallestars-ca-bundle")  # fmt: skip
    kinds = {"Certificate", "Ingress", "HTTPRoute", "BackendTLSPolicy"}
    objs = [d for d in docs if d["kind"] in kinds]
    assert {d["kind"] for d in objs} == kinds
    for obj in objs:
        out = dry_run(kubectl, obj)
        assert out.returncode == 0, f"{obj['kind']}: {out.stderr}"


def test_the_api_server_would_refuse_what_the_chart_must_not_render(
    third_party_crds: None, kubectl: Kubectl
) -> None:
    """The dry run can fail: the same HTTPRoute with a path the Gateway API refuses."""
    ns = str(kubectl.namespace)
    docs = rendered(ns, "--set", "webhooks.httpRoute.enabled=true",
                    "--set", "webhooks.httpRoute.parentRefs[0].name=gw")  # fmt: skip
    [route] = [d for d in docs if d["kind"] == "HTTPRoute"]
    assert dry_run(kubectl, route).returncode == 0
    route["spec"]["rules"][0]["matches"][0]["path"]["value"] = "no-leading-slash"
    out = dry_run(kubectl, route)
    assert out.returncode != 0 and "path" in out.stderr.lower(), out.stderr
