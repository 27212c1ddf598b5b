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
import wallestars_console.metrics
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
    "--set", "networkPolicies.callbackNamespaces={functions}", "--set", "apiPriority.enabled=true",
    "--set", "notifications.defaultSink.url=https://events.example.com/w",
    "--set", "notifications.defaultSink.secretName=feed", "--set", "notifications.defaultSink.namespaces={shop}",
    "--set", "notifications.allowPrivateCIDRs={10.20.0.0/16}", "--set", "console.enabled=true",
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
    ("webhooks.ingress.enabled=true", "/webhooks/ingress"),
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
    ("operator.namespaces={Team_A}", "/operator/namespaces/0"),
    (
        "operator.insecureDevelopmentAllowPlainHTTP=yes",
        "/operator/insecureDevelopmentAllowPlainHTTP",
    ),
    ("networkPolicies.apiServer.cidrs={10.0.0.1}", "/networkPolicies/apiServer/cidrs/0"),
    ("notifications.defaultSink.url=http://events", "/notifications/defaultSink/url"),  # https only
    ("notifications.defaultSink.phases={Done}", "/notifications/defaultSink/phases/0"),
    ("notifications.timeoutSeconds=0", "/notifications/timeoutSeconds"),
    ("networkPolicies.apiServer.ports={0}", "/networkPolicies/apiServer/ports/0"),
    # An egress rule without peers would allow every destination.
    ("networkPolicies.operatorEgress[0].ports[0].port=443", "/networkPolicies/operatorEgress/0"),
    (
        "networkPolicies.webhooksEgress[0].to[0].publicAddresses=false",
        "/networkPolicies/webhooksEgress/0/to/0",
    ),
]


@pytest.mark.parametrize(("value", "where"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_values_schema_refuses_bad_values_and_says_where(value: str, where: str) -> None:
    out = helm("template", "x", str(CHART), "--set", value)
    assert out.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert where in out.stderr, out.stderr


def test_notification_values_reach_the_operator() -> None:
    (dep,) = [
        d
        for d in of_kind(rendered(*ALL_ON), "Deployment")
        if d["metadata"]["name"].endswith("operator")
    ]
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WALLESTARS_NOTIFY_SINK_URL"] == "https://events.example.com/w"
    assert env["WALLESTARS_NOTIFY_SINK_SECRET"] == "feed"
    assert env["WALLESTARS_NOTIFY_SINK_NAMESPACES"] == "shop"
    assert env["WALLESTARS_NOTIFY_ALLOW_PRIVATE_CIDRS"] == "10.20.0.0/16"
    assert env["WALLESTARS_NOTIFY_MAX_AGE_SECONDS"] == "86400"
    (dep,) = [
        d for d in of_kind(rendered(), "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    names = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "WALLESTARS_NOTIFY_SINK_URL" not in names  # no sink unless one is named
    out = helm("template", "x", str(CHART), "--set", "notifications.defaultSink.url=https://e/w")
    assert out.returncode != 0 and "notifications.defaultSink.secretName is required" in out.stderr


def console_rights(docs: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(kind, namespace, rules) of every role bound to the console's ServiceAccount."""
    (dep,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("console")]
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d["rules"]
             for d in of_kind(docs, "Role") + of_kind(docs, "ClusterRole")}  # fmt: skip
    return [(b["roleRef"]["kind"], b["metadata"].get("namespace", ""),
             roles[(b["roleRef"]["kind"], b["metadata"].get("namespace", ""), b["roleRef"]["name"])])
            for b in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding")
            if any(s.get("name") == sa for s in b.get("subjects") or [])]  # fmt: skip


def test_the_console_is_off_by_default_and_may_only_read_tasks_and_agents() -> None:
    assert not [d for d in rendered() if "console" in d["metadata"]["name"]]
    docs = rendered(*ALL_ON)
    (dep,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("console")]
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["wallestars-console"]
    # Its own rights: reading AgentTasks and Agents, for the shared watches of live
    # updates; everything else is done with the callers' tokens.
    read = [{"apiGroups": ["agents.wallestars.io"], "resources": ["agenttasks", "agents"],
             "verbs": ["get", "list", "watch"]}]  # fmt: skip
    assert console_rights(docs) == [("ClusterRole", "", read)]
    narrow = rendered(*ALL_ON, "--set", "console.liveUpdates.namespaces={team-a,team-b}")
    assert sorted(console_rights(narrow)) == [("Role", "team-a", read), ("Role", "team-b", read)]
    assert console_rights(rendered(*ALL_ON, "--set", "console.liveUpdates.watchAs=caller")) == []
    (np,) = [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("console")]
    assert np["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["WALLESTARS_CONSOLE_ARTIFACTS_URL"].startswith("https://wallestars-webhooks.")
    assert env["WALLESTARS_CONSOLE_SESSION_KEY_FILE"] == "/etc/wallestars/console-session/key"
    assert (env["WALLESTARS_CONSOLE_WATCH_AS"], env["WALLESTARS_CONSOLE_SHARED_NAMESPACES"]) == (
        "console", "[]")  # fmt: skip
    (key,) = [
        d for d in of_kind(docs, "Secret") if d["metadata"]["name"].endswith("console-session")
    ]
    assert len(base64.b64decode(key["data"]["key"])) >= 32

    # The webhook service lets the console in for artifacts, and only when it is on.
    def webhooks_sources(d: list[dict[str, Any]]) -> list[Any]:
        (w,) = [
            x for x in of_kind(d, "NetworkPolicy") if x["metadata"]["name"].endswith("webhooks")
        ]
        return [f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                for f in w["spec"]["ingress"][0]["from"]]  # fmt: skip

    assert "console" in webhooks_sources(docs) and "console" not in webhooks_sources(rendered())


def test_every_pod_meets_pod_security_restricted() -> None:
    docs = rendered(*ALL_ON)
    pods = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment")]
    pods += [d["spec"] for d in of_kind(docs, "Pod")]  # the helm test hook
    assert len(pods) == 4  # operator, webhooks, console, the helm test
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
        # An Event per transition it writes (Running, the terminal phases, Retrying).
        ("events.k8s.io", "events", "create"),
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
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
                "168.63.129.16/32"} <= set(block["except"])  # fmt: skip


def egress_of(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    (pol,) = [d for d in of_kind(docs, "NetworkPolicy")
              if d["metadata"]["name"] == f"wallestars-{component}"]  # fmt: skip
    assert "Egress" in pol["spec"]["policyTypes"]
    return list(pol["spec"]["egress"])


def public_443(rule: dict[str, Any]) -> bool:
    return rule.get("ports") == [{"port": 443, "protocol": "TCP"}] and [
        t["ipBlock"]["cidr"] for t in rule["to"] if "ipBlock" in t
    ] == ["0.0.0.0/0"]


@pytest.mark.parametrize("component", ["operator", "webhooks"])
def test_service_policies_let_out_dns_and_the_api_server(component: str) -> None:
    rules = egress_of(rendered(), component)
    dns, api = rules[0], rules[1]
    assert dns["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]  # fmt: skip
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    # No cidrs: the API ports to any address (Service port or endpoints' port).
    assert "to" not in api
    assert api["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    tight = egress_of(
        rendered("--set", "networkPolicies.apiServer.cidrs={172.18.0.2/32}"), component
    )
    assert tight[1]["to"] == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]


def test_operator_reaches_public_https_and_the_webhook_service_s3_only_when_used() -> None:
    denied = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicies"]["deniedCIDRs"]
    assert "168.63.129.16/32" in denied  # Azure's WireServer
    op = egress_of(rendered(), "operator")
    assert len(op) == 3 and public_443(op[2])
    assert op[2]["to"][0]["ipBlock"]["except"] == denied
    # The filesystem store: the webhook service needs nothing beyond DNS and the API server.
    assert len(egress_of(rendered(), "webhooks")) == 2
    s3 = egress_of(rendered("--set", "artifacts.store=s3", "--set", "artifacts.s3.bucket=results"), "webhooks")  # fmt: skip
    assert len(s3) == 3 and public_443(s3[2])
    # Rules of your own: NetworkPolicy peers pass through as given.
    mine = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fn"}}}],
             "ports": [{"port": 8080, "protocol": "TCP"}]}]  # fmt: skip
    op = egress_of(rendered("--set-json", f"networkPolicies.operatorEgress={json.dumps(mine)}"), "operator")  # fmt: skip
    assert op[2:] == mine


# --- Secrets (issue #13: "Any Secret can be sent to any URL") ---------------------------


def secret_ref_paths() -> list[str]:
    """Every Secret reference in the Agent schema, as .spec.a.b or .spec.a[].b."""
    crd = yaml.safe_load((REPO / "crds" / "agents.wallestars.io_agents.yaml").read_text())
    [version] = crd["spec"]["versions"]
    out: list[str] = []

    def walk(schema: dict[str, Any], path: str) -> None:
        for name, sub in (schema.get("properties") or {}).items():
            if name.endswith("SecretRef") or name == "secretKeyRef":
                out.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(version["schema"]["openAPIV3Schema"], "")
    return out


def secret_refs_policy() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = rendered()
    name = "agents.agents.wallestars.io-secret-refs"
    (policy,) = [
        d for d in of_kind(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"] == name
    ]
    (binding,) = [d for d in of_kind(docs, "ValidatingAdmissionPolicyBinding")
                  if d["metadata"]["name"] == name]  # fmt: skip
    return policy["spec"], binding["spec"]


def test_secret_refs_policy_checks_every_secret_reference_in_the_agent_schema() -> None:
    spec, binding = secret_refs_policy()
    assert binding == {"policyName": "agents.agents.wallestars.io-secret-refs", "validationActions": ["Deny"]}  # fmt: skip
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["agents.wallestars.io"] and rule["resources"] == ["agents"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    cel = "\n".join(
        [v["expression"] for v in spec["variables"]]
        + [v["expression"] for v in spec["validations"]]
    )
    paths = secret_ref_paths()
    assert {".spec.cloud.http.authHeaderSecretRef", ".spec.cloud.azure.functionKeySecretRef",
            ".spec.cloud.aws.credentialsSecretRef", ".spec.browser.env[].valueFrom.secretKeyRef"} <= set(paths)  # fmt: skip
    for path in paths:
        head, *rest = path.split("[]")
        assert f"object{head}" in cel, f"the policy does not read {path}"
        assert all(part in cel for part in rest), f"the policy does not read {path}"
        assert f"{path.rsplit('.', 1)[1]}.name" in cel, f"the policy does not take {path}.name"
    # Each name variable is checked by some validation, as the requesting user, for get.
    checks = [
        v["expression"] for v in spec["validations"] if ".check('get').allowed()" in v["expression"]
    ]
    for var in spec["variables"]:
        assert any(f"variables.{var['name']}" in c for c in checks), var["name"]
    for c in checks:
        assert "authorizer.group('').resource('secrets').namespace(request.namespace).name(" in c
        # An authorization check costs 350,000 of an expression's 1,000,000 CEL budget.
        assert c.count(".check(") == 1, c


def test_secret_refs_policy_messages_name_the_field_without_the_authorizer() -> None:
    """The API server evaluates messageExpression without `authorizer` (nor may a message
    use a variable that calls it): a message that tried would fall back to a generic one."""
    spec, _ = secret_refs_policy()
    authz_vars = {v["name"] for v in spec["variables"] if "authorizer" in v["expression"]}
    for v in spec["validations"]:
        msg = v["messageExpression"]
        assert "authorizer" not in msg and not any(f"variables.{n}" in msg for n in authz_vars)
        assert v["reason"] == "Forbidden"
    msgs = "\n".join(v["messageExpression"] for v in spec["validations"])
    for path in secret_ref_paths():
        assert path.lstrip(".") in msgs, f"no refusal names {path}"
    # The browser env's Secrets are checked in slots 0..n-1, and more than n are refused.
    exprs = [v["expression"] for v in spec["validations"]]
    slots = {int(i) for e in exprs for i in re.findall(r"variables\.envSecrets\[(\d+)\]", e)}
    assert slots == set(range(len(slots))) and len(slots) >= 4
    assert f"size(variables.envSecrets) <= {len(slots)}" in exprs


def test_operator_gets_secrets_cluster_wide_only_without_operator_namespaces() -> None:
    def secret_rules(role: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in role["rules"] if "secrets" in r["resources"]]

    docs = rendered()
    (cluster,) = [r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] == "wallestars-operator"]  # fmt: skip
    assert secret_rules(cluster) == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]  # fmt: skip
    assert not [r for r in of_kind(docs, "Role") if secret_rules(r)]

    docs = rendered("--set", "operator.namespaces={team-a,team-b}")
    (cluster,) = [r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] == "wallestars-operator"]  # fmt: skip
    assert not secret_rules(cluster)
    roles = {r["metadata"]["namespace"]: r for r in of_kind(docs, "Role") if secret_rules(r)}
    assert set(roles) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert secret_rules(role) == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}]  # fmt: skip
        (binding,) = [b for b in of_kind(docs, "RoleBinding")
                      if b["metadata"]["namespace"] == ns and b["roleRef"]["name"] == role["metadata"]["name"]]  # fmt: skip
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "wallestars-operator",
                "namespace": "wallestars-system",
            }
        ]


@pytest.mark.parametrize(("args", "value"), [((), "false"), (("--set", "operator.insecureDevelopmentAllowPlainHTTP=true"), "true")])  # fmt: skip
def test_plain_http_function_urls_only_when_asked(args: tuple[str, ...], value: str) -> None:
    (dep,) = [d for d in of_kind(rendered(*args), "Deployment") if d["metadata"]["name"].endswith("operator")]  # fmt: skip
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WALLESTARS_INSECURE_DEVELOPMENT_ALLOW_PLAIN_HTTP"] == value


def test_master_key_is_generated_in_standard_webhooks_form_or_taken_from_a_named_secret() -> None:
    (secret,) = [
        s for s in of_kind(rendered(), "Secret") if s["metadata"]["name"].endswith("-master-key")
    ]
    key = base64.b64decode(secret["data"]["keys"]).decode()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=\n", key)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    docs = rendered("--set", "masterKey.existingSecret=my-keys")
    assert not [s for s in of_kind(docs, "Secret") if "keys" in s.get("data", {})]
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


@pytest.mark.parametrize("component", ["operator", "webhooks", "console"])
def test_dockerfile_agrees_with_the_chart(component: str) -> None:
    """One image (the repository's Dockerfile) serves the three Deployments: each names one of
    its entry points as its command, runs as its user, from the same image."""
    text = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"COPY {component}/ {component}/" in text  # its source is in the image
    command = values[component]["command"]
    assert command == [f"wallestars-{component}"]
    scripts = (REPO / "pyproject.toml").read_text()
    assert f'wallestars-{component} = "wallestars_{component}.__main__:main"' in scripts
    assert f"wallestars_{component}" in text  # the build checks it imports
    assert "ARG APP_UID=10001" in text and "USER ${APP_UID}" in text
    (dep,) = [
        d
        for d in of_kind(rendered(*ALL_ON), "Deployment")
        if d["metadata"]["name"].endswith(component)
    ]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["containers"][0]["command"] == command
    assert pod["containers"][0]["image"] == f"ghcr.io/wallestars/{values[component]['image']}:0.1.0"
    assert values["operator"]["image"] == values["webhooks"]["image"]


# --- dashboards and alerts --------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the operator, the webhook service and the console can export."""
    assert wallestars_operator.metrics and wallestars_webhooks.metrics and taskmetrics
    assert wallestars_console.metrics
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
    # Every ConfigMap but the service's CA (webhooks-tls.yaml) is a dashboard.
    cms = [c for c in of_kind(rendered(), "ConfigMap") if not c["metadata"]["name"].endswith("-ca")]
    assert {next(iter(c["data"])) for c in cms} == {"overview.json", "agent.json"}
    for c in cms:
        assert c["metadata"]["labels"]["grafana_dashboard"] == "1"
        json.loads(next(iter(c["data"].values())))


def test_alerts_cover_what_operators_watch_for() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert names == {
        "WallestarsTaskFailureRateHigh", "WallestarsQueueOnlyGrows", "WallestarsAgentNotReady",
        "WallestarsCallbackVerificationFailures", "WallestarsOperatorDown",
        # The integration plan's SLOs: success > 95 %, permanent failures < 1 %,
        # agent availability > 99 % (metrics.slo).
        "WallestarsSuccessRateBelowSLO", "WallestarsPermanentFailuresAboveSLO",
        "WallestarsAgentAvailabilityBelowSLO",
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


def test_api_priority_objects_take_our_service_accounts_only_when_asked() -> None:
    assert not of_kind(rendered(), "FlowSchema")
    assert not of_kind(rendered(), "PriorityLevelConfiguration")
    docs = rendered("--set", "apiPriority.enabled=true")
    (fs,) = of_kind(docs, "FlowSchema")
    (pl,) = of_kind(docs, "PriorityLevelConfiguration")
    assert fs["spec"]["priorityLevelConfiguration"]["name"] == pl["metadata"]["name"]
    # Ahead of the built-in service-accounts (9000) and global-default (9900) schemas.
    assert fs["spec"]["matchingPrecedence"] < 9000
    subjects = {(s["serviceAccount"]["namespace"], s["serviceAccount"]["name"])
                for s in fs["spec"]["rules"][0]["subjects"]}  # fmt: skip
    sas = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "ServiceAccount")
    }
    assert subjects == sas and len(sas) == 2, (subjects, sas)
    assert pl["spec"]["limited"]["nominalConcurrencyShares"] == 30


# --- transport security (docs/operator.md, Transport security) -------------------------


def env_of(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
    [dep] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith(component)]
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in c["env"]}


def test_by_default_the_service_serves_https_with_a_certificate_the_chart_made() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    docs = rendered()
    [secret] = [
        d for d in of_kind(docs, "Secret") if d["metadata"]["name"].endswith("-webhooks-tls")
    ]
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    assert cert.issuer == ca.subject
    pub = ca.public_key()
    assert isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    if isinstance(pub, rsa.RSAPublicKey):  # signed by that CA, not merely naming it
        assert cert.signature_hash_algorithm is not None
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)  # fmt: skip
    svc = secret["metadata"]["name"].removesuffix("-tls")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{svc}.wallestars-system.svc" in names.get_values_for_type(x509.DNSName)
    [cm] = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == f"{svc}-ca"]
    assert cm["data"]["ca.crt"].encode() == data["ca.crt"]

    op, wh = env_of(docs, "-operator"), env_of(docs, "-webhooks")
    assert op["WALLESTARS_CALLBACK_BASE_URL"] == f"https://{svc}.wallestars-system.svc:8080"
    assert op["WALLESTARS_CALLBACK_CA_FILE"] == "/etc/wallestars/callback-ca/ca.crt"
    assert op["WALLESTARS_CLOUD_CALLBACK_BASE_URL"] == ""
    assert "WALLESTARS_CLIENT_CA_KEY_FILE" not in op and "WALLESTARS_TLS_CLIENT_CA_FILE" not in wh
    assert wh["WALLESTARS_TLS_CERT_FILE"] == "/etc/wallestars/tls/tls.crt"
    assert wh["WALLESTARS_OPS_PORT"] == "9091"
    [dep] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == svc]
    [c] = dep["spec"]["template"]["spec"]["containers"]
    # Probes on the plain port: a kubelet presents no client certificate.
    assert (
        c["readinessProbe"]["httpGet"]["port"] == c["livenessProbe"]["httpGet"]["port"] == "metrics"
    )
    [service] = [d for d in of_kind(docs, "Service") if d["metadata"]["name"] == svc]
    assert [p["name"] for p in service["spec"]["ports"]] == ["https", "metrics"]
    # The operator mounts the CA only, never the service's key.
    [opdep] = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    [vol] = [v for v in opdep["spec"]["template"]["spec"]["volumes"] if v["name"] == "callback-ca"]
    assert vol["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert not of_kind(docs, "Ingress") and not of_kind(docs, "HTTPRoute")


def test_plain_http_only_when_tls_is_turned_off() -> None:
    docs = rendered("--set", "webhooks.tls.enabled=false")
    assert not [d for d in of_kind(docs, "Secret") if d["metadata"]["name"].endswith("-tls")]
    op = env_of(docs, "-operator")
    assert op["WALLESTARS_CALLBACK_BASE_URL"].startswith("http://")
    assert "WALLESTARS_CALLBACK_CA_FILE" not in op
    assert "WALLESTARS_TLS_CERT_FILE" not in env_of(docs, "-webhooks")


def test_mutual_tls_gives_the_client_ca_key_to_the_operator_alone() -> None:
    docs = rendered("--set", "webhooks.tls.mutual=true")
    [ca] = [d for d in of_kind(docs, "Secret") if d["metadata"]["name"].endswith("-client-ca")]
    assert set(ca["data"]) == {"tls.crt", "tls.key"}
    op, wh = env_of(docs, "-operator"), env_of(docs, "-webhooks")
    assert op["WALLESTARS_CLIENT_CA_KEY_FILE"] == "/etc/wallestars/client-ca/tls.key"
    assert wh["WALLESTARS_TLS_CLIENT_CA_FILE"] == "/etc/wallestars/client-ca/ca.crt"
    [dep] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-webhooks")]
    [vol] = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "client-ca"]
    assert vol["secret"]["items"] == [{"key": "tls.crt", "path": "ca.crt"}]


def test_the_tls_example_uses_cert_manager_and_an_ingress_for_the_callback_paths_only() -> None:
    docs = rendered("-f", str(REPO / "examples" / "values-tls.yaml"))
    [cert] = of_kind(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {
        "name": "wallestars-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "callbacks.wallestars.example.com" in cert["spec"]["dnsNames"]
    assert not [
        d for d in of_kind(docs, "Secret") if d["metadata"]["name"].endswith("-webhooks-tls")
    ]
    [ing] = of_kind(docs, "Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    [rule] = ing["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/api/agent-callback", "/api/artifacts/"]
    op = env_of(docs, "-operator")
    assert op["WALLESTARS_CLOUD_CALLBACK_BASE_URL"] == "https://callbacks.wallestars.example.com"
    assert op["WALLESTARS_CLIENT_CA_CERT_FILE"]


def test_an_httproute_and_backend_tls_policy_when_asked() -> None:
    docs = rendered("--set", "webhooks.httpRoute.enabled=true",
                    "--set", "webhooks.httpRoute.parentRefs[0].name=public-gw",
                    "--set", "webhooks.httpRoute.hostnames[0]=cb.example.com")  # fmt: skip
    [route] = of_kind(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "public-gw"}]
    paths = [m["path"]["value"] for m in route["spec"]["rules"][0]["matches"]]
    assert paths == ["/api/agent-callback", "/api/artifacts/"]
    [policy] = of_kind(docs, "BackendTLSPolicy")
    svc = route["spec"]["rules"][0]["backendRefs"][0]["name"]
    assert policy["spec"]["validation"]["caCertificateRefs"][0]["name"] == f"{svc}-ca"
    assert (
        env_of(docs, "-operator")["WALLESTARS_CLOUD_CALLBACK_BASE_URL"] == "https://cb.example.com"
    )
    out = helm("template", "w", str(CHART), "--set", "webhooks.tls.certManager.enabled=true")
    assert (
        out.returncode != 0 and "webhooks.tls.certManager.issuerRef.name is required" in out.stderr
    )
