"""The operator end to end: real control plane, node stand-in, webhook service, test agents."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import (
    REPO,
    Kubectl,
    OperatorProcess,
    browser_agent,
    events,
    http_agent,
    phase_is,
    task,
    wait_for,
)

pytestmark = pytest.mark.cluster


def progress_agent_command() -> list[str]:
    """A browser Agent's command for an agent that reports progress and succeeds."""
    return [sys.executable, str(REPO / "tests" / "agents" / "progress_agent.py")]


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


def test_slow_function_is_invoked_once(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    """A function that calls back after 8 s (longer than the redelivery delay, which is
    only for attempts a crashed predecessor may never have sent) is invoked exactly once."""
    http_agent(kubectl, function_url)
    task(kubectl, "slow", "fn", "slow")
    st = wait_for("Succeeded", lambda: phase_is(kubectl, "slow", "Succeeded", "Failed"), timeout=60)
    assert st["phase"] == "Succeeded"
    uid = kubectl.json("get", "agenttask", "slow")["metadata"]["uid"]
    count = json.loads(urllib.request.urlopen(f"{function_url}invocations/{uid}", timeout=5).read())  # noqa: S310
    assert count == 1


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


def test_agent_killed_for_memory_is_reported_oomkilled(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    """The Agent's memory limit reaches the Job; the kernel's OOM killer ends the agent
    (the stand-in runs it in a memory cgroup); the attempt fails with reason OOMKilled."""
    hog = "x = bytearray(400 * 1024 * 1024); print(len(x))"
    browser_agent(kubectl, [sys.executable, "-c", hog], name="hog",
                  resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}})  # fmt: skip
    task(kubectl, "hog-task", "hog", retries={"limit": 0})
    st = wait_for(
        "Failed", lambda: phase_is(kubectl, "hog-task", "Failed", "Succeeded"), timeout=90
    )
    assert st["reason"] == "OOMKilled", st
    assert st["attempts"][0]["exitCode"] == 137


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


def test_agent_selection_by_capability_and_load_and_paused_agents(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    browser_agent(kubectl, ["sh", "-c", "sleep 20"], name="busy", slots=4)
    browser_agent(kubectl, ["sh", "-c", "sleep 20"], name="idle", slots=4)
    browser_agent(kubectl, ["sh", "-c", "sleep 20"], name="held", slots=9)
    kubectl("patch", "agent", "held", "--type=merge", "-p", '{"spec":{"paused":true}}')
    task(kubectl, "first", "busy")
    wait_for(
        "first dispatched", lambda: phase_is(kubectl, "first", "Dispatched", "Running"), timeout=30
    )

    def by_selector(name: str, caps: list[str]) -> None:
        kubectl.apply({
            "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"agentSelector": {"type": "browser", "capabilities": caps}, "type": "screenshot",
                     "payload": {"url": "https://example.com/"}},
        })  # fmt: skip

    by_selector("second", ["screenshot"])
    st = wait_for(
        "second dispatched",
        lambda: phase_is(kubectl, "second", "Dispatched", "Running"),
        timeout=30,
    )
    assert st["agent"] == "idle"  # least loaded of the capable, unpaused agents
    by_selector("impossible", ["pdf"])
    st = wait_for("a reason", lambda: phase_is(kubectl, "impossible", "Queued"), timeout=30)
    assert st["reason"] == "NoAgentWithCapability"
    task(kubectl, "to-held", "held")
    st = wait_for("a reason", lambda: phase_is(kubectl, "to-held", "Queued"), timeout=30)
    assert st["reason"] == "AgentPaused"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Scheduled"]["status"] == "False" and conds["Scheduled"]["reason"] == "AgentPaused"
    # The agents' own status: slots in use, Ready, paused.
    agent = wait_for(
        "agent status",
        lambda: (
            (kubectl.json("get", "agent", "busy").get("status") or {}).get("activeTasks") == 1
            and kubectl.json("get", "agent", "busy")
        ),
        timeout=30,
    )
    assert {c["type"]: c["status"] for c in agent["status"]["conditions"]} == {
        "Ready": "True",
        "Healthy": "True",
    }

    def held_ready() -> dict[str, Any] | None:
        # Wait for the reason itself: a Ready=True written before the pause was seen may
        # still stand for up to 2 s (agent status is written at most every 2 s).
        conds = (kubectl.json("get", "agent", "held").get("status") or {}).get("conditions")
        ready = next((c for c in conds or [] if c["type"] == "Ready"), None)
        return ready if ready and ready["reason"] == "Paused" else None

    ready = wait_for("held status", held_ready, timeout=30)
    assert (ready["status"], ready["reason"]) == ("False", "Paused")


def test_operator_rbac_is_least_privilege(operator: OperatorProcess, kubectl: Kubectl) -> None:
    """The operator in these tests runs under the chart's ClusterRole (a bound token of
    its service account); this is what that role allows and, as much, what it does not."""
    who = "--as=system:serviceaccount:wallestars-system:wallestars-operator"

    def can(*args: str) -> bool:
        return (
            kubectl.run("auth", "can-i", *args, who, check=False, namespaced=False).stdout.strip()
            == "yes"
        )

    tasks, agents = "agenttasks.agents.wallestars.io", "agents.agents.wallestars.io"
    workflows, schedules = (
        "agentworkflows.agents.wallestars.io",
        "agentschedules.agents.wallestars.io",
    )
    for allowed in (
        ("watch", tasks, "-A"), ("delete", tasks, "-n", "any"),
        # A workflow's steps and a schedule's runs; patch only to cancel them, which the
        # chart's admission policy enforces (test_the_operator_may_only_cancel_what_it_created).
        ("create", tasks, "-n", "any"), ("patch", tasks, "-n", "any"),
        ("watch", workflows, "-A"), ("create", workflows, "-n", "any"),
        ("patch", workflows, "--subresource=status", "-n", "any"),
        ("watch", schedules, "-A"), ("patch", schedules, "--subresource=status", "-n", "any"),
        ("patch", tasks, "--subresource=status", "-n", "any"),
        ("watch", agents, "-A"), ("patch", agents, "--subresource=status", "-n", "any"),
        ("create", "jobs.batch", "-n", "any"), ("delete", "jobs.batch", "-n", "any"),
        ("create", "secrets", "-n", "any"), ("get", "secrets/agent-key", "-n", "any"),
        ("list", "pods", "-n", "any"), ("create", "events.events.k8s.io", "-n", "any"),
        ("update", "leases.coordination.k8s.io/wallestars-operator", "-n", "wallestars-system"),
    ):  # fmt: skip
        assert can(*allowed), allowed
    for denied in (
        ("patch", agents, "-n", "any"),
        ("patch", schedules, "-n", "any"), ("create", schedules, "-n", "any"),  # the user's
        ("list", "secrets", "-n", "any"), ("watch", "secrets", "-A"),
        ("delete", "secrets", "-n", "any"), ("update", "secrets", "-n", "any"),
        ("create", "pods", "-n", "any"), ("delete", "pods", "-n", "any"),
        ("patch", "jobs.batch", "-n", "any"),
        ("update", "leases.coordination.k8s.io/kube-scheduler", "-n", "wallestars-system"),
        ("create", "leases.coordination.k8s.io", "-n", "kube-system"),
        ("create", "events", "-n", "any"),  # core/v1 events: only events.k8s.io
        ("*", "*"),
    ):  # fmt: skip
        assert not can(*denied), denied


def test_the_operator_may_only_cancel_what_it_created(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    """The chart's admission policy (installed with its RBAC here too) narrows the
    operator's patch of AgentTasks to spec.cancel: true on a workflow's or schedule's."""
    who = ["--as=system:serviceaccount:wallestars-system:wallestars-operator", "--dry-run=server"]
    body = {"agentRef": "nobody", "type": "custom", "payload": {}}
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": "users"}, "spec": body})  # fmt: skip
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": "run", "labels": {"agents.wallestars.io/schedule": "s"}},
                   "spec": body})  # fmt: skip

    def patch(name: str, spec: dict[str, Any]) -> str:
        out = kubectl.run("patch", "agenttask", name, "--type=merge", "-p",
                          json.dumps({"spec": spec}), *who, check=False)  # fmt: skip
        return "ok" if out.returncode == 0 else out.stderr

    assert patch("run", {"cancel": True}) == "ok"
    assert "may only cancel what it created" in patch("users", {"cancel": True})
    assert "nothing in the spec but spec.cancel" in patch("run", {"payload": {"url": "https://x/"}})


def test_evicted_pod_is_a_disruption_not_a_failed_attempt(
    operator: OperatorProcess, kubectl: Kubectl, tmp_path: Path
) -> None:
    """An agent pod evicted through the Eviction API (a node drain) gets the DisruptionTarget
    condition; the Job's podFailurePolicy ignores it and runs a new pod, so the task goes on
    in the same attempt instead of failing it."""
    # In the repository: pods see the host's files, but their /tmp is their own emptyDir.
    marker = REPO / ".cluster" / f"first-pod-ran-{uuid.uuid4().hex[:8]}"
    agent = str(REPO / "tests" / "agents" / "progress_agent.py")
    script = f"if [ -e {marker} ]; then exec {sys.executable} {agent}; else touch {marker}; exec sleep 300; fi"
    browser_agent(kubectl, ["sh", "-c", script], name="drained")
    task(kubectl, "drain-task", "drained")
    wait_for("the first pod to run", marker.exists, timeout=60)
    [pod] = kubectl.json("get", "pods", "-l", "agents.wallestars.io/task=drain-task")["items"]
    name = pod["metadata"]["name"]
    body = tmp_path / "eviction.json"
    body.write_text(json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": kubectl.namespace}}))  # fmt: skip
    kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{kubectl.namespace}/pods/{name}/eviction",
        "-f",
        str(body),
    )
    st = wait_for(
        "Succeeded",
        lambda: phase_is(kubectl, "drain-task", "Succeeded", "Failed", "TimedOut"),
        timeout=120,
    )
    assert st["phase"] == "Succeeded" and st["attempt"] == 1 and len(st["attempts"]) == 1, st

    def job_status() -> dict[str, Any]:
        [job] = kubectl.json("get", "jobs", "-l", "agents.wallestars.io/task=drain-task")["items"]
        return dict(job["status"])

    # The second pod's exit reaches the Job a moment after its callback reached the task.
    js = wait_for(
        "the Job to complete", lambda: job_status().get("succeeded") == 1 and job_status()
    )
    assert not js.get("failed"), js  # the evicted pod was not counted as a failure
