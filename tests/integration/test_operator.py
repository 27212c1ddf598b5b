"""The operator end to end: real control plane, node stand-in, webhook service, test agents."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import localcluster
import pytest
from harness import (
    REPO,
    Kubectl,
    OperatorProcess,
    WebhookService,
    free_port,
    start_operator,
    wait_for,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    op = start_operator(
        cluster, tmp_path_factory.mktemp("operator"), webhook_service.masters, webhook_service.url
    )
    yield op
    op.stop()


@pytest.fixture(scope="module")
def function_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "agents" / "http_function.py"), str(port)]
    )
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for("the test function to listen", up)
    yield url
    proc.terminate()
    proc.wait(10)


def http_agent(kubectl: Kubectl, url: str, name: str = "fn", slots: int = 10) -> None:
    kubectl(
        "create",
        "secret",
        "generic",
        f"{name}-auth",
        "--from-literal=authorization=Bearer test-function-token",
    )
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"type": "cloud", "capabilities": ["api-test", "custom"], "concurrency": slots,
                 "cloud": {"provider": "http", "http": {"url": url, "authHeaderSecretRef": {"name": f"{name}-auth", "key": "authorization"}}}},
    })  # fmt: skip


def browser_agent(kubectl: Kubectl, command: list[str], name: str = "br", slots: int = 2) -> None:
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"type": "browser", "capabilities": ["screenshot", "custom"], "concurrency": slots,
                 "browser": {"image": "local/test-agent:dev", "command": command}},
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


def events(kubectl: Kubectl, name: str) -> list[str]:
    items = kubectl.json("get", "events.events.k8s.io", f"--field-selector=regarding.name={name}")[
        "items"
    ]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("eventTime") or "")]


def test_http_agent_task_succeeds(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    task(kubectl, "ok", "fn")
    st = wait_for("Succeeded", lambda: phase_is(kubectl, "ok", "Succeeded", "Failed"), timeout=60)
    assert st["phase"] == "Succeeded" and st["attempt"] == 1 and st["agent"] == "fn"
    assert st["result"]["data"] == {"attempt": 1, "type": "custom"}
    assert [a["attempt"] for a in st["attempts"]] == [1]
    # An Event for each transition the operator made (Succeeded was the webhook service's).
    wait_for("the Dispatched event", lambda: "Dispatched" in events(kubectl, "ok"), timeout=10)


def test_failure_then_success_on_retry_with_backoff(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    task(
        kubectl, "flaky", "fn", "fail-once", retries={"limit": 2, "backoffSeconds": 2, "jitter": 0}
    )
    st = wait_for(
        "Succeeded", lambda: phase_is(kubectl, "flaky", "Succeeded", "Failed"), timeout=60
    )
    assert st["phase"] == "Succeeded" and st["attempt"] == 2
    first, second = st["attempts"]
    assert first["outcome"] == "Failed" and first["reason"] == "Flaky"
    from wallestars_api.lifecycle import parse_ts

    gap = (parse_ts(second["dispatchTime"]) - parse_ts(first["completionTime"])).total_seconds()  # type: ignore[operator]
    assert gap >= 2 - 1  # the backoff was honoured (timestamps have whole seconds)


def test_failure_until_the_limit(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    task(kubectl, "doomed", "fn", "fail", retries={"limit": 2, "backoffSeconds": 1, "jitter": 0})
    st = wait_for("Failed", lambda: phase_is(kubectl, "doomed", "Failed", "Succeeded"), timeout=60)
    assert (st["phase"], st["reason"], st["attempt"]) == ("Failed", "RetriesExhausted", 3)
    assert [a["outcome"] for a in st["attempts"]] == ["Failed"] * 3


def test_refused_invocation_is_a_failed_attempt(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    task(kubectl, "refused", "fn", "refuse", retries={"limit": 0})
    st = wait_for("Failed", lambda: phase_is(kubectl, "refused", "Failed"), timeout=60)
    assert st["reason"] == "DispatchFailed" and "HTTP 500" in st["error"]["message"]


def test_attempt_timeout(operator: OperatorProcess, function_url: str, kubectl: Kubectl) -> None:
    http_agent(kubectl, function_url)
    task(kubectl, "slow", "fn", "silent", timeoutSeconds=1, retries={"limit": 0})
    st = wait_for("TimedOut", lambda: phase_is(kubectl, "slow", "TimedOut", "Failed"), timeout=60)
    assert (st["phase"], st["reason"]) == ("TimedOut", "Timeout")


def test_browser_agent_job_succeeds(operator: OperatorProcess, kubectl: Kubectl) -> None:
    browser_agent(kubectl, [sys.executable, str(REPO / "tests" / "agents" / "progress_agent.py")])
    task(kubectl, "shot", "br")
    st = wait_for("Succeeded", lambda: phase_is(kubectl, "shot", "Succeeded", "Failed"), timeout=90)
    assert st["phase"] == "Succeeded", st
    assert st["result"]["artifacts"][0]["name"] == "agent.py"
    [job] = kubectl.json("get", "jobs")["items"]
    assert (
        job["spec"]["backoffLimit"] == 0 and job["metadata"]["ownerReferences"][0]["name"] == "shot"
    )


def test_job_that_exits_without_calling_back(operator: OperatorProcess, kubectl: Kubectl) -> None:
    browser_agent(kubectl, ["sh", "-c", "echo doing nothing; exit 0"], name="mute")
    task(kubectl, "mute-task", "mute", retries={"limit": 0})
    st = wait_for(
        "Failed", lambda: phase_is(kubectl, "mute-task", "Failed", "Succeeded"), timeout=90
    )
    assert st["reason"] == "CallbackMissing" and st["attempts"][0]["exitCode"] == 0


def test_cancel_while_running(operator: OperatorProcess, kubectl: Kubectl) -> None:
    browser_agent(kubectl, ["sh", "-c", "sleep 300"], name="sleepy")
    task(kubectl, "cancel-me", "sleepy")
    wait_for(
        "Dispatched", lambda: phase_is(kubectl, "cancel-me", "Dispatched", "Running"), timeout=60
    )
    wait_for("its Job", lambda: kubectl.json("get", "jobs")["items"], timeout=30)
    kubectl("patch", "agenttask", "cancel-me", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    st = wait_for("Cancelled", lambda: phase_is(kubectl, "cancel-me", "Cancelled"), timeout=60)
    assert st["reason"] == "Cancelled"
    wait_for("the Job to be deleted", lambda: not kubectl.json("get", "jobs")["items"], timeout=60)


def test_suspend_then_resume(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    task(kubectl, "held", "fn", suspend=True)
    st = wait_for("Queued and Suspended", lambda: phase_is(kubectl, "held", "Queued"), timeout=30)
    assert st["reason"] == "Suspended"
    kubectl("patch", "agenttask", "held", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("Succeeded", lambda: phase_is(kubectl, "held", "Succeeded"), timeout=60)


def test_queue_timeout_and_ttl(operator: OperatorProcess, kubectl: Kubectl) -> None:
    task(kubectl, "nobody", "no-such-agent", queueTimeoutSeconds=2, ttlSecondsAfterFinished=2)
    st = wait_for("TimedOut", lambda: phase_is(kubectl, "nobody", "TimedOut"), timeout=60)
    assert st["reason"] == "QueueTimeout"
    wait_for(
        "TTL deletion",
        lambda: kubectl.run("get", "agenttask", "nobody", check=False).returncode != 0,
        timeout=60,
    )


def test_concurrency_two_with_mixed_priorities(operator: OperatorProcess, kubectl: Kubectl) -> None:
    # All six wait first (their agent does not exist yet), so the order is the queue's.
    for i in range(6):
        task(kubectl, f"c{i}", "pair", priority=i % 3, retries={"limit": 0})
    wait_for(
        "six waiting",
        lambda: all(phase_is(kubectl, f"c{i}", "Queued") for i in range(6)),
        timeout=30,
    )
    browser_agent(kubectl, ["sh", "-c", "sleep 3; exit 0"], name="pair", slots=2)
    peak = 0
    positions: dict[str, int] = {}
    dispatched: dict[str, str] = {}

    def sample() -> bool:
        nonlocal peak
        items = kubectl.json("get", "agenttasks")["items"]
        live = [
            o for o in items if (o.get("status") or {}).get("phase") in ("Dispatched", "Running")
        ]
        peak = max(peak, len(live))
        for o in items:
            st = o.get("status") or {}
            if st.get("dispatchTime"):
                dispatched.setdefault(o["metadata"]["name"], st["dispatchTime"])
            if (
                (st.get("queue") or {}).get("position")
                and len(live) == 2
                and not positions.get(o["metadata"]["name"])
            ):
                positions[o["metadata"]["name"]] = st["queue"]["position"]
        return all((o.get("status") or {}).get("phase") in ("Failed", "Succeeded") for o in items)

    wait_for("all six to end", sample, timeout=120, interval=0.2)
    assert peak <= 2  # never more than spec.concurrency at any sampled moment
    order = sorted(dispatched, key=lambda n: (dispatched[n], n))
    assert (
        set(order[:2]) == {"c2", "c5"}
        and set(order[2:4]) == {"c1", "c4"}
        and set(order[4:]) == {"c0", "c3"}
    )
    # While the first two ran, the others showed where they stood, priority then age.
    assert (
        positions.get("c1") == 1
        and positions.get("c4") == 2
        and positions.get("c0") == 3
        and positions.get("c3") == 4
    )
