"""Manifests of an attempt: deterministic names, ownership, Pod Security `restricted`."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

from wallestars_operator.manifests import (
    AttemptConfig,
    attempt_name,
    browser_job,
    invocation,
    key_secret,
)

TASK: dict[str, Any] = {
    "metadata": {
        "name": "homepage-screenshot",
        "namespace": "demo",
        "uid": "8a1f5a3e-1111-2222-3333-444455556666",
    },
    "spec": {
        "type": "screenshot",
        "payload": {"url": "https://example.com/"},
        "timeoutSeconds": 120,
    },
}
AGENT: dict[str, Any] = {
    "metadata": {"name": "chromium"},
    "spec": {"type": "browser", "browser": {
        "image": "ghcr.io/wallestars/browser-agent:0.1.0", "viewport": {"width": 1280, "height": 800},
        "resources": {"limits": {"memory": "1Gi"}},
        "env": [{"name": "EXTRA", "value": "1"}, {"name": "WALLESTARS_ATTEMPT", "value": "forged"}],
    }},
}  # fmt: skip
CFG = AttemptConfig(callback_base="http://webhooks:8080")


def test_names_are_deterministic_unique_and_dns_safe() -> None:
    n1 = attempt_name("x" * 200, "uid-1", 1)
    assert n1 == attempt_name("x" * 200, "uid-1", 1)
    assert len({n1, attempt_name("x" * 200, "uid-1", 2), attempt_name("x" * 200, "uid-2", 1)}) == 3
    assert len(n1) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n1)


def test_job_is_one_owned_restricted_attempt() -> None:
    job = browser_job(TASK, AGENT, 2, CFG)
    assert job["metadata"]["name"] == attempt_name(
        "homepage-screenshot", TASK["metadata"]["uid"], 2
    )
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "AgentTask",
        TASK["metadata"]["uid"],
        True,
    )
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 120)
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert (
        pod["securityContext"]["runAsNonRoot"]
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert (
        sc["allowPrivilegeEscalation"] is False
        and sc["capabilities"]["drop"] == ["ALL"]
        and sc["readOnlyRootFilesystem"]
    )
    assert c["resources"] == {"limits": {"memory": "1Gi"}}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["WALLESTARS_ATTEMPT"] == "2"  # an agent's extra env cannot override the operator's
    assert env["EXTRA"] == "1"
    assert (
        env["WALLESTARS_CALLBACK_URL"]
        == f"http://webhooks:8080/api/agent-callback?task={TASK['metadata']['uid']}&attempt=2"
        "&namespace=demo&name=homepage-screenshot"
    )
    assert json.loads(env["WALLESTARS_PAYLOAD"]) == {"url": "https://example.com/"}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/dev/shm", "/tmp", "/var/run/wallestars/key"} <= mounts
    assert "whsec_" not in json.dumps(job)  # the key itself is only in the Secret, never in the Job


def test_key_secret_is_owned_and_immutable() -> None:
    s = key_secret(TASK, 1, "chromium", "whsec_abc")
    assert s["immutable"] is True and s["metadata"]["ownerReferences"][0]["kind"] == "AgentTask"
    assert base64.b64decode(s["data"]["key"]) == b"whsec_abc"
    assert s["metadata"]["name"] == browser_job(TASK, AGENT, 1, CFG)["metadata"]["name"]


def test_invocation_payload() -> None:
    inv = invocation(TASK, 3, "fn", "whsec_k", CFG, datetime(2026, 1, 1, tzinfo=UTC))
    assert (
        inv["attempt"] == 3
        and inv["key"] == "whsec_k"
        and inv["deadline"] == "2026-01-01T00:02:00Z"
    )
    assert inv["callbackUrl"].endswith("&attempt=3&namespace=demo&name=homepage-screenshot")


def test_default_image_and_the_clusters_ranges_reach_the_agent() -> None:
    agent = {"metadata": {"name": "plain"}, "spec": {"type": "browser", "browser": {}}}
    cfg = AttemptConfig("http://webhooks:8080", browser_image="registry.local/agent:1",
                        deny_cidrs=("10.96.0.0/12", "10.244.0.0/16"))  # fmt: skip
    [c] = browser_job(TASK, agent, 1, cfg)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "registry.local/agent:1"
    assert env["WALLESTARS_DENY_CIDRS"] == "10.96.0.0/12,10.244.0.0/16"
    [c] = browser_job(TASK, AGENT, 1, CFG)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == AGENT["spec"]["browser"]["image"]
    assert "WALLESTARS_DENY_CIDRS" not in {e["name"] for e in c["env"]}


# A DNS-1123 subdomain (what a task's or an Agent's name may be): labels of [a-z0-9-]
# that start and end alphanumeric, joined by dots, at most 253 characters.
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def subdomains() -> Any:
    from hypothesis import strategies as st

    label = st.from_regex(rf"\A{DNS_LABEL}\Z", fullmatch=True)
    return st.lists(label, min_size=1, max_size=8).map(".".join).filter(lambda s: len(s) <= 253)


def test_every_label_value_and_name_is_valid_for_any_task_name() -> None:
    """Issue #13, item 5: a name cut at 63 characters on a '-' or '.' made every Secret
    and Job of the attempt refused (422), and the attempt waited for its timeout."""
    from hypothesis import given, settings

    @settings(max_examples=500, deadline=None)
    @given(subdomains(), subdomains())
    def check(task_name: str, agent_name: str) -> None:
        task = {**TASK, "metadata": {**TASK["metadata"], "name": task_name}}
        agent = {**AGENT, "metadata": {"name": agent_name}}
        job = browser_job(task, agent, 3, CFG)
        secret = key_secret(task, 3, agent_name, "whsec_x")
        for obj in (job, secret, job["spec"]["template"]):
            for value in obj["metadata"]["labels"].values():
                assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), (task_name, value)
        for name in (job["metadata"]["name"], secret["metadata"]["name"]):
            assert len(name) <= 63 and re.fullmatch(DNS_LABEL, name), name  # also job-name

    check()


def test_a_name_cut_on_a_dash_or_dot_still_ends_alphanumeric() -> None:
    name = "a" * 62 + "-" + "b" * 100
    job = browser_job({**TASK, "metadata": {**TASK["metadata"], "name": name}}, AGENT, 1, CFG)
    assert job["metadata"]["labels"]["agents.wallestars.io/task"] == "a" * 62
    dotted = "a" * 44 + "." + "b" * 100
    assert "." not in attempt_name(dotted, "u", 1)
