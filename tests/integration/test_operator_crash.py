"""Crash safety: the operator SIGKILLed again and again while tasks run."""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import localcluster
import pytest
from harness import (
    REPO,
    Kubectl,
    WebhookService,
    browser_agent,
    events,
    http_agent,
    phase_is,
    start_operator,
    task,
    wait_for,
)

pytestmark = pytest.mark.cluster


def test_crash_safety_under_repeated_sigkill(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    function_url: str,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    """SIGKILL the operator 20 times at random moments while 100 tasks run."""

    http_agent(kubectl, function_url, name="fn", slots=20)
    browser_agent(
        kubectl,
        [sys.executable, str(REPO / "tests" / "agents" / "progress_agent.py")],
        name="br",
        slots=5,
    )
    items = []
    for i in range(100):
        agent = "br" if i % 5 == 0 else "fn"
        behaviour = "fail-once" if i % 7 == 0 else "succeed"
        items.append({
            "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": f"k{i}"},
            "spec": {"agentRef": agent, "type": "custom", "payload": {"data": {"behaviour": behaviour}},
                     "retries": {"limit": 2, "backoffSeconds": 1, "jitter": 0}},
        })  # fmt: skip
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": items})
    # One identity, as a container restarted in its pod keeps its pod's name: the restarted
    # operator renews its own lease at once instead of waiting for it to expire.
    lease = {"WALLESTARS_LEASE_SECONDS": "3", "WALLESTARS_IDENTITY": "crashy"}
    op = start_operator(
        cluster, tmp_path / "crashy", webhook_service.masters, webhook_service.url, **lease
    )
    rng = random.Random(4)
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.2, 2.5))
            op.proc.send_signal(signal.SIGKILL)
            op.proc.wait()
            op = start_operator(
                cluster,
                tmp_path / "crashy",
                webhook_service.masters,
                webhook_service.url,
                **lease,
            )
        terminal = ("Succeeded", "PartiallySucceeded", "Failed", "TimedOut", "Cancelled")

        def unfinished() -> list[tuple[str, str, str]]:
            tasks = kubectl.json("get", "agenttasks")["items"]
            return [(t["metadata"]["name"], (t.get("status") or {}).get("phase", ""), (t.get("status") or {}).get("reason", ""))
                    for t in tasks if (t.get("status") or {}).get("phase") not in terminal]  # fmt: skip

        try:
            wait_for("every task to finish", lambda: not unfinished(), timeout=300, interval=1)
        except AssertionError:
            raise AssertionError(f"not finished: {unfinished()[:15]}") from None
    finally:
        op.stop()
    tasks = {t["metadata"]["name"]: t for t in kubectl.json("get", "agenttasks")["items"]}
    assert {t["status"]["phase"] for t in tasks.values()} == {"Succeeded"}
    for name, t in tasks.items():
        attempts = [a["attempt"] for a in t["status"]["attempts"]]
        assert attempts == list(range(1, len(attempts) + 1)), (name, attempts)
    # Never two Jobs for one attempt: one Job per (task, attempt) label pair.
    jobs = kubectl.json("get", "jobs")["items"]
    pairs = [
        (
            j["metadata"]["labels"]["agents.wallestars.io/task"],
            j["metadata"]["labels"]["agents.wallestars.io/attempt"],
        )
        for j in jobs
    ]
    assert len(pairs) == len(set(pairs))
    # Nothing orphaned: every Job and key Secret belongs to a task that exists.
    secrets = [
        s
        for s in kubectl.json("get", "secrets")["items"]
        if "agents.wallestars.io/task" in (s["metadata"].get("labels") or {})
    ]
    for obj in jobs + secrets:
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner["name"] in tasks and owner["uid"] == tasks[owner["name"]]["metadata"]["uid"]
    # Exactly one terminal transition each: one terminal Event per task at most.
    for name in list(tasks)[:20]:
        finals = [
            r
            for r in events(kubectl, name)
            if r in ("Succeeded", "Failed", "Cancelled", "TimedOut", "RetriesExhausted")
        ]
        assert len(finals) <= 1, (name, finals)


def test_two_replicas_never_both_act(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    function_url: str,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    """Two operators: one holds the Lease and acts; the other takes over when it dies."""

    http_agent(kubectl, function_url, name="fn", slots=20)
    lease = {"WALLESTARS_LEASE_SECONDS": "6"}  # room for a stalled event loop on a loaded machine
    a = start_operator(
        cluster,
        tmp_path / "a",
        webhook_service.masters,
        webhook_service.url,
        WALLESTARS_IDENTITY="replica-a",
        **lease,
    )
    b = start_operator(
        cluster,
        tmp_path / "b",
        webhook_service.masters,
        webhook_service.url,
        WALLESTARS_IDENTITY="replica-b",
        **lease,
    )
    try:
        for i in range(5):
            task(kubectl, f"r{i}", "fn")
        wait_for(
            "five done",
            lambda: all(phase_is(kubectl, f"r{i}", "Succeeded") for i in range(5)),
            timeout=60,
        )
        leaders = [op for op in (a, b) if "leadership acquired" in op.log.read_text()]
        assert len(leaders) == 1  # exactly one replica has ever led
        holder = Kubectl(cluster.kubeconfig).json(
            "get", "lease", "-n", "wallestars-system", "wallestars-operator"
        )
        assert holder["spec"]["holderIdentity"] == ("replica-a" if leaders[0] is a else "replica-b")
        leader, other = (a, b) if leaders[0] is a else (b, a)
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        for i in range(5, 10):
            task(kubectl, f"r{i}", "fn")
        wait_for(
            "five more done",
            lambda: all(phase_is(kubectl, f"r{i}", "Succeeded") for i in range(5, 10)),
            timeout=60,
        )
        assert "leadership acquired" in other.log.read_text()
        # Every dispatch was made once: one Dispatched event per task.
        for i in range(10):  # Events go out from a background queue: wait for each
            name = f"r{i}"

            def dispatched_event(name: str = name) -> bool:
                return "Dispatched" in events(kubectl, name)

            wait_for(f"{name}'s Dispatched event", dispatched_event, timeout=30)
            assert events(kubectl, f"r{i}").count("Dispatched") == 1
    finally:
        a.stop()
        b.stop()
