"""The Agent and AgentTask CRDs on the real API server: columns, refusals, examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO, Kubectl

pytestmark = pytest.mark.cluster

# Helm values files (values-*.yaml) are rendered in test_chart_render, not applied.
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if not p.name.startswith("values-"))

TASK: dict[str, Any] = {
    "apiVersion": "agents.wallestars.io/v1alpha1",
    "kind": "AgentTask",
    "metadata": {"name": "t1"},
    "spec": {
        "agentRef": "chromium",
        "type": "screenshot",
        "payload": {"url": "https://example.com/"},
    },
}
BROWSER_AGENT: dict[str, Any] = {
    "apiVersion": "agents.wallestars.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "a1"},
    "spec": {"type": "browser", "capabilities": ["screenshot"], "browser": {"image": "x/y:1"}},
}
HTTP_AGENT: dict[str, Any] = {
    "apiVersion": "agents.wallestars.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "a2"},
    "spec": {
        "type": "cloud",
        "capabilities": ["api-test"],
        "cloud": {"provider": "http", "http": {"url": "https://fn.example.com/run"}},
    },
}


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with spec keys set (value None removes the key)."""
    obj = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


def payload(**p: Any) -> dict[str, Any]:
    return {"url": "https://example.com/", **p}


# (id, object, text the API server's refusal must contain: the field it names)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("both-ref-and-selector", with_spec(TASK, agentSelector={"type": "browser"}),
     "set exactly one of spec.agentRef or spec.agentSelector"),
    ("neither-ref-nor-selector", with_spec(TASK, agentRef=None),
     "set exactly one of spec.agentRef or spec.agentSelector"),
    ("secret-on-a-click", with_spec(TASK, type="e2e-test", payload={"steps": [
        {"action": "click", "selector": "#go",
         "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
     "valueFrom is for a fill step, instead of value"),
    ("secret-ref-without-key", with_spec(TASK, type="api-test", payload=payload(
        headersFrom={"Authorization": {"secretKeyRef": {"name": "s"}}})),
     "spec.payload.headersFrom.Authorization.secretKeyRef.key"),
    ("priority-too-high", with_spec(TASK, priority=11), "spec.priority"),
    ("priority-negative", with_spec(TASK, priority=-1), "spec.priority"),
    ("timeout-negative", with_spec(TASK, timeoutSeconds=-5), "spec.timeoutSeconds"),
    ("timeout-absurd", with_spec(TASK, timeoutSeconds=10_000_000), "spec.timeoutSeconds"),
    ("queue-timeout-zero", with_spec(TASK, queueTimeoutSeconds=0), "spec.queueTimeoutSeconds"),
    ("unknown-task-type", with_spec(TASK, type="mine-bitcoin"), "spec.type"),
    ("file-url", with_spec(TASK, payload={"url": "file:///etc/passwd"}), "spec.payload.url"),
    ("javascript-url", with_spec(TASK, payload={"url": "javascript:alert(1)"}), "spec.payload.url"),
    ("screenshot-without-url", with_spec(TASK, payload={"fullPage": True}), "spec.payload.url"),
    ("no-payload", with_spec(TASK, payload=None), "spec.payload"),
    ("e2e-without-steps", with_spec(TASK, type="e2e-test", payload={}), "spec.payload.steps"),
    ("goto-step-without-url",
     with_spec(TASK, type="e2e-test", payload={"steps": [{"action": "goto"}]}),
     "spec.payload.steps[0]"),
    ("step-with-file-url",
     with_spec(TASK, type="e2e-test", payload={"steps": [{"action": "goto", "url": "file:///x"}]}),
     "spec.payload.steps[0].url"),
    ("scrape-without-selectors", with_spec(TASK, type="scrape", payload=payload()),
     "spec.payload.selectors"),
    ("deadline-below-timeout", with_spec(TASK, timeoutSeconds=600, deadlineSeconds=60),
     "spec.deadlineSeconds"),
    ("retries-limit-absurd", with_spec(TASK, retries={"limit": 100}), "spec.retries.limit"),
    ("retries-max-below-backoff",
     with_spec(TASK, retries={"backoffSeconds": 600, "maxBackoffSeconds": 10}),
     "spec.retries.maxBackoffSeconds"),
    ("browser-agent-bad-private-address",
     with_spec(BROWSER_AGENT, browser={"network": {"allowPrivateAddresses": ["127.0.0.1:http"]}}),
     "spec.browser.network.allowPrivateAddresses[0]"),
    ("browser-agent-no-browser-section", with_spec(BROWSER_AGENT, browser=None), "spec.browser"),
    ("cloud-agent-no-function",
     with_spec(HTTP_AGENT, cloud={"provider": "http"}), "spec.cloud.http"),
    ("lambda-agent-no-function",
     with_spec(HTTP_AGENT, cloud={"provider": "aws-lambda", "aws": {"region": "eu-west-1"}}),
     "spec.cloud.aws.functionName"),
    ("http-agent-file-url",
     with_spec(HTTP_AGENT, cloud={"provider": "http", "http": {"url": "file:///etc/shadow"}}),
     "spec.cloud.http.url"),
    ("agent-zero-slots", with_spec(BROWSER_AGENT, concurrency=0), "spec.concurrency"),
    ("agent-bad-capability", with_spec(BROWSER_AGENT, capabilities=["Screen Shot"]),
     "spec.capabilities[0]"),
    ("browser-agent-malformed-image",
     with_spec(BROWSER_AGENT, browser={"image": "UPPER CASE/with spaces::"}),
     "must be an image reference such as registry.example.com"),
    ("browser-agent-image-bad-digest",
     with_spec(BROWSER_AGENT, browser={"image": "registry.example.com/agent@sha256:xyz"}),
     "spec.browser.image"),
    ("agent-inline-secret-env",
     with_spec(BROWSER_AGENT, browser={"image": "x", "env": [{"name": "TOKEN"}]}),
     "spec.browser.env[0]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "field"), [(o, f) for _, o, f in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_object_is_refused_naming_the_field(
    kubectl: Kubectl, obj: dict[str, Any], field: str
) -> None:
    out = kubectl.run("create", "-f", "-", input=json.dumps(obj), check=False)
    assert out.returncode != 0, f"the API server accepted an invalid object:\n{out.stdout}"
    assert "is invalid" in out.stderr
    assert field in out.stderr, out.stderr
    # Nothing was stored.
    kind = obj["kind"].lower()
    assert kubectl.run("get", kind, obj["metadata"]["name"], check=False).returncode != 0


def test_at_least_fifteen_kinds_of_invalid_object() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted(kubectl: Kubectl, path: Path) -> None:
    out = kubectl("create", "-f", str(path), "-o", "name")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (obj,) = [
        d for d in docs if d["kind"] in ("Agent", "AgentTask", "AgentWorkflow", "AgentSchedule")
    ]
    # A generated name (a workflow created once per run) is the one kubectl printed.
    kind = f"{obj['kind'].lower()}.agents.wallestars.io/"
    (name,) = [line.removeprefix(kind) for line in out.split() if line.startswith(kind)]
    assert name == obj["metadata"].get("name", name)
    got = kubectl.json("get", obj["kind"].lower(), name)
    assert got["spec"].get("type") == obj["spec"].get("type")
    if obj["kind"] == "AgentWorkflow":
        assert [s["name"] for s in got["spec"]["steps"]] == [
            s["name"] for s in obj["spec"]["steps"]
        ]
    for ref in [d for d in docs if d["kind"] == "Secret"]:  # credentials opt in (#13)
        assert ref["metadata"]["labels"]["agents.wallestars.io/credential"] == "true"


def test_defaults_are_applied(kubectl: Kubectl) -> None:
    kubectl.apply(TASK)
    spec = kubectl.json("get", "agenttask", "t1")["spec"]
    assert spec["priority"] == 5
    assert spec["timeoutSeconds"] == 300
    assert spec["retries"] == {
        "limit": 3, "backoffSeconds": 10, "factor": 2, "maxBackoffSeconds": 300, "jitter": 0.2,
    }  # fmt: skip
    assert spec["cancel"] is False and spec["suspend"] is False


def table(text: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of column -> cell (empty cells stay empty)."""
    header, *lines = text.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [
        {n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines
    ]


def set_status(kubectl: Kubectl, kind: str, name: str, status: dict[str, Any]) -> None:
    kubectl.patch_status(kind, name, status)


def test_printer_columns(kubectl: Kubectl) -> None:
    kubectl.apply(BROWSER_AGENT)
    kubectl.apply(with_spec(TASK, agentRef="a1", priority=8))
    set_status(
        kubectl, "agenttask", "t1",
        {"phase": "Running", "agent": "a1", "progress": 40, "attempt": 2, "reason": "AttemptStarted"},
    )  # fmt: skip
    lines = kubectl("get", "agenttasks").splitlines()
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "AGENT",
        "TYPE",
        "PRIORITY",
        "PROGRESS",
        "ATTEMPT",
        "REASON",
        "AGE",
    ]
    assert lines[1].split()[:8] == [
        "t1",
        "Running",
        "a1",
        "screenshot",
        "8",
        "40",
        "2",
        "AttemptStarted",
    ]
    set_status(
        kubectl, "agent", "a1",
        {"activeTasks": 1, "queuedTasks": 3, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    )  # fmt: skip
    rows = table(kubectl("get", "agents"))
    assert list(rows[0]) == [
        "NAME",
        "TYPE",
        "PROVIDER",
        "READY",
        "ACTIVE",
        "QUEUED",
        "SLOTS",
        "AGE",
    ]
    del rows[0]["AGE"]
    assert rows[0] == {"NAME": "a1", "TYPE": "browser", "PROVIDER": "", "READY": "True",
                       "ACTIVE": "1", "QUEUED": "3", "SLOTS": "1"}  # fmt: skip
    # Short names and the category work as users type them.
    assert "t1" in kubectl("get", "at")
    assert "a1" in kubectl("get", "ag")
    both = kubectl("get", "wallestars")
    assert "agent.agents.wallestars.io/a1" in both and "agenttask.agents.wallestars.io/t1" in both


def test_spec_is_immutable_after_dispatch(kubectl: Kubectl) -> None:
    kubectl.apply(TASK)
    # While queued, the spec may still change.
    kubectl("patch", "agenttask", "t1", "--type=merge", "-p", '{"spec":{"priority":9}}')
    set_status(kubectl, "agenttask", "t1", {"phase": "Queued"})
    kubectl(
        "patch",
        "agenttask",
        "t1",
        "--type=merge",
        "-p",
        '{"spec":{"payload":{"url":"https://b.example/"}}}',
    )
    set_status(
        kubectl, "agenttask", "t1", {"phase": "Dispatched", "agent": "chromium", "attempt": 1}
    )
    refused = [
        ('{"spec":{"payload":{"url":"https://c.example/"}}}', "spec.payload"),
        ('{"spec":{"type":"performance"}}', "spec.payload"),
        ('{"spec":{"agentRef":"other"}}', "spec.agentRef"),
        ('{"spec":{"priority":1}}', "spec.priority"),
        ('{"spec":{"retries":{"limit":0}}}', "spec.retries"),
    ]
    for patch, field in refused:
        out = kubectl.run("patch", "agenttask", "t1", "--type=merge", "-p", patch, check=False)
        assert out.returncode != 0, f"{patch} was accepted after dispatch"
        assert (
            field in out.stderr
            and "cannot change once the task has been dispatched (phase Dispatched)" in out.stderr
        )
    spec = kubectl.json("get", "agenttask", "t1")["spec"]
    assert spec["payload"]["url"] == "https://b.example/" and spec["priority"] == 9
    # cancel, suspend and ttlSecondsAfterFinished stay mutable.
    kubectl(
        "patch",
        "agenttask",
        "t1",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true,"ttlSecondsAfterFinished":60}}',
    )
    assert kubectl.json("get", "agenttask", "t1")["spec"]["cancel"] is True


def test_invalid_status_is_refused(kubectl: Kubectl) -> None:
    kubectl.apply(TASK)
    out = kubectl.run(
        "patch", "agenttask", "t1", "--subresource=status", "--type=merge",
        "-p", '{"status":{"progress":101,"phase":"Exploded"}}', check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "status.progress" in out.stderr and "status.phase" in out.stderr
