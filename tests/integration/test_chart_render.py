"""The Helm chart as files and rendered manifests (helm lint/template; no cluster).

Installing it for real is tests/integration/test_chart.py.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from functools import cache
from typing import Any

import localcluster
import pytest
import wallestars_operator.metrics
import wallestars_webhooks.metrics
import yaml
from harness import REPO
from helmlocal import CHART, helm_bin
from prometheus_client import REGISTRY
from wallestars_api import taskmetrics

ALL_ON = [
    "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
    "--set", "metrics.prometheusRule.enabled=true", "--set", "networkPolicies.browserNamespaces={team-a,team-b}",
    "--set", "networkPolicies.callbackNamespaces={functions}",
]  # fmt: skip


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_bin()), *args], capture_output=True, text=True, timeout=60, check=False
    )


@cache
def rendered(*args: str) -> list[dict[str, Any]]:
    out = helm("template", "wallestars", str(CHART), "-n", "wallestars-system", *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("args", [(), tuple(ALL_ON)], ids=["defaults", "everything-on"])
def test_helm_lint_passes(args: tuple[str, ...]) -> None:
    out = helm("lint", "--strict", str(CHART), *args)
    assert out.returncode == 0, out.stdout + out.stderr


BAD_VALUES = [
    ("operator.replicas=-1", "/operator/replicas"),
    ("webhooks.port=70000", "/webhooks/port"),
    ("artifacts.store=ftp", "/artifacts/store"),
    ("artifacts.store=s3", "/artifacts/s3/bucket"),  # S3 without a bucket
    ("operator.logLevel=LOUD", "/operator/logLevel"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("operator.denyCIDRs={10.0.0.0}", "/operator/denyCIDRs/0"),  # no prefix length
    ("webhooks.service.type=Ingress", "/webhooks/service/type"),
    ("operator.replica=2", "additional properties 'replica'"),  # a typo is not ignored
    ("operator.command=null", "missing property 'command'"),
    ("metrics.prometheusRule.failureRatio=2", "/metrics/prometheusRule/failureRatio"),
    ("operator.callbackBaseURL=ftp://webhooks", "/operator/callbackBaseURL"),
    ("networkPolicies.browserNamespaces={Team_A}", "/networkPolicies/browserNamespaces/0"),
]


@pytest.mark.parametrize(("value", "where"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_values_schema_refuses_bad_values_and_says_where(value: str, where: str) -> None:
    out = helm("template", "x", str(CHART), "--set", value)
    assert out.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert where in out.stderr, out.stderr


def test_every_pod_meets_pod_security_restricted() -> None:
    docs = rendered(*ALL_ON)
    pods = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment")]
    pods += [d["spec"] for d in of_kind(docs, "Pod")]  # the helm test hook
    assert len(pods) == 3
    for spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "memory" in c["resources"]["limits"]
            # A read-only root: the services write only to volumes, /tmp among them (the
            # test hook's one-shot check writes nothing).
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert c["name"] == "readyz" or "/tmp" in mounts, c["name"]


def test_rbac_has_no_wildcards_and_the_webhook_service_only_its_verbs() -> None:
    docs = rendered(*ALL_ON)
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    assert roles
    for r in roles:
        for rule in r["rules"]:
            for k in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(k, []), f"{r['metadata']['name']}: wildcard in {k}"
    (wh,) = [r for r in roles if r["metadata"]["name"] == "wallestars-webhooks"]
    assert {(g, res, v) for rule in wh["rules"] for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]} == {
        ("agents.wallestars.io", "agenttasks/status", "get"),
        ("agents.wallestars.io", "agenttasks/status", "patch"),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }  # fmt: skip


def test_aggregated_roles_extend_view_and_edit_but_never_status_writes() -> None:
    docs = rendered()
    by_name = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    view, edit = by_name["wallestars-view"], by_name["wallestars-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "aggregate-to-view" not in json.dumps(edit["metadata"]["labels"])
    writes = {v for rule in edit["rules"] for v in rule["verbs"]}
    assert {"create", "patch", "delete"} <= writes
    assert not any(res.endswith("/status") for rule in edit["rules"] for res in rule["resources"])


def test_network_policies_for_the_webhook_service_and_each_browser_namespace() -> None:
    docs = rendered(*ALL_ON)
    pols = {
        (d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in of_kind(docs, "NetworkPolicy")
    }
    wh = pols[("wallestars-system", "wallestars-webhooks")]["spec"]
    sources = wh["ingress"][0]["from"]
    assert (
        sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "browser-agent"
    )
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "functions"}}
    } in sources
    for ns in ("team-a", "team-b"):
        eg = pols[(ns, "wallestars-browser-egress")]["spec"]
        assert eg["policyTypes"] == ["Ingress", "Egress"]
        public = [r for r in eg["egress"] if any("ipBlock" in t for t in r["to"])]
        (block,) = [t["ipBlock"] for r in public for t in r["to"]]
        assert block["cidr"] == "0.0.0.0/0"
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"} <= set(block["except"])  # fmt: skip


def test_master_key_is_generated_in_standard_webhooks_form_or_taken_from_a_named_secret() -> None:
    (secret,) = of_kind(rendered(), "Secret")
    key = base64.b64decode(secret["data"]["keys"]).decode()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=\n", key)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    docs = rendered("--set", "masterKey.existingSecret=my-keys")
    assert not of_kind(docs, "Secret")
    for d in of_kind(docs, "Deployment"):
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert vols["master-key"]["secret"]["secretName"] == "my-keys"


def test_artifact_store_pvc_by_default_emptydir_or_s3_when_asked() -> None:
    def webhooks(docs: list[dict[str, Any]]) -> dict[str, Any]:
        (d,) = [
            d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("webhooks")
        ]
        return dict(d["spec"]["template"]["spec"])

    docs = rendered()
    (pvc,) = of_kind(docs, "PersistentVolumeClaim")
    vols = {v["name"]: v for v in webhooks(docs)["volumes"]}
    assert vols["artifacts"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    docs = rendered("--set", "artifacts.store=s3", "--set", "artifacts.s3.bucket=results",
                    "--set", "artifacts.s3.credentialsSecret=s3-creds")  # fmt: skip
    assert not of_kind(docs, "PersistentVolumeClaim")
    spec = webhooks(docs)
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["WALLESTARS_ARTIFACT_STORE"] == "s3" and env["WALLESTARS_S3_BUCKET"] == "results"
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_recommended_labels_on_every_object() -> None:
    for d in rendered(*ALL_ON):
        labels = d["metadata"].get("labels") or {}
        if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            continue  # a verbatim copy of crds/ (one source of truth), installed as is
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                  "app.kubernetes.io/managed-by", "helm.sh/chart"):  # fmt: skip
            assert k in labels, f"{d['kind']}/{d['metadata']['name']} lacks {k}"


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["operator", "webhooks"])
def test_dockerfile_agrees_with_the_chart(component: str) -> None:
    text = (REPO / component / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry and json.loads(entry[1]) == values[component]["command"]
    assert "ARG APP_UID=10001" in text and "USER ${APP_UID}" in text
    (dep,) = [
        d for d in of_kind(rendered(), "Deployment") if d["metadata"]["name"].endswith(component)
    ]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    scripts = (REPO / "pyproject.toml").read_text()
    assert f'wallestars-{component} = "wallestars_{component}.__main__:main"' in scripts
    assert f"/{component}:" in dep["spec"]["template"]["spec"]["containers"][0]["image"]


# --- dashboards and alerts --------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the operator and the webhook service can export."""
    assert wallestars_operator.metrics and wallestars_webhooks.metrics and taskmetrics
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for name in REGISTRY._collector_to_names[collector]:
            names.add(name)
    return {n for n in names if n.startswith("wallestars_")}


def dashboard_queries() -> dict[str, str]:
    out = {}
    for path in sorted((CHART / "files" / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                out[f"{path.name}: {p['title']} [{t['refId']}]"] = t["expr"]
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                out[f"{path.name}: variable {v['name']}"] = v["definition"]
    return out


def alert_rules() -> list[dict[str, Any]]:
    (rule,) = of_kind(rendered(*ALL_ON), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_dashboards_are_generated_from_hack_dashboards_py() -> None:
    out = subprocess.run([sys.executable, str(REPO / "hack" / "dashboards.py"), "--check"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_dashboards_have_a_datasource_variable_used_by_every_panel() -> None:
    for path in (CHART / "files" / "dashboards").glob("*.json"):
        d = json.loads(path.read_text())
        (ds,) = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        assert ds["query"] == "prometheus"
        for p in d["panels"]:
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_dashboard_configmaps_carry_the_sidecar_label() -> None:
    cms = of_kind(rendered(), "ConfigMap")
    assert {next(iter(c["data"])) for c in cms} == {"overview.json", "agent.json"}
    for c in cms:
        assert c["metadata"]["labels"]["grafana_dashboard"] == "1"
        json.loads(next(iter(c["data"].values())))


def test_alerts_cover_what_operators_watch_for() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert names == {
        "WallestarsTaskFailureRateHigh", "WallestarsQueueOnlyGrows", "WallestarsAgentNotReady",
        "WallestarsCallbackVerificationFailures", "WallestarsOperatorDown",
    }  # fmt: skip
    for r in alert_rules():
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]


def test_every_query_uses_only_exported_metric_names() -> None:
    exported = exported_names()
    assert "wallestars_agenttasks_total" in exported and "wallestars_callbacks_total" in exported
    exprs = dict(dashboard_queries())
    exprs.update({f"alert {r['alert']}": r["expr"] for r in alert_rules()})
    for where, expr in exprs.items():
        for name in re.findall(r"\bwallestars_[a-z_]+", expr):
            assert name in exported, f"{where}: {name} is not a metric the services export"


def test_monitoring_objects_decode_strictly_into_prometheus_operator_types() -> None:
    """The ServiceMonitor, PodMonitor and PrometheusRule against prometheus-operator's own
    Go API types (hack/gobuild/monitoringcheck): its CRDs are not installed here, so the
    API server cannot judge them (the other kinds: tests/integration/test_chart.py)."""
    docs = [d for d in rendered(*ALL_ON) if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {d["kind"] for d in docs} == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    check = localcluster.bin_dirs()["monitoringcheck"] / "monitoringcheck"
    out = subprocess.run([str(check)], input=yaml.safe_dump_all(docs), capture_output=True,
                         text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ok ") == 3
    # And it does refuse a field prometheus-operator does not know.
    bad = [{**docs[0], "spec": {**docs[0]["spec"], "endpointz": []}}]
    out = subprocess.run([str(check)], input=yaml.safe_dump_all(bad), capture_output=True,
                         text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 1 and "endpointz" in out.stderr
