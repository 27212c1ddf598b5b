"""Crash safety of AgentWorkflows: the operator SIGKILLed again and again while workflows
run (its own module: no other operator may hold the lease meanwhile)."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import localcluster
import pytest
from harness import Kubectl, WebhookService, http_agent, start_operator

from tests.integration.test_workflows import WF, finished, step

pytestmark = pytest.mark.cluster


def test_workflows_survive_repeated_sigkill_creating_each_step_once(
    cluster: localcluster.Cluster, webhook_service: WebhookService, function_url: str,
    kubectl: Kubectl, tmp_path: Path,
) -> None:  # fmt: skip
    """The operator SIGKILLed 12 times at random moments while 10 workflows of 6 steps
    run: every workflow succeeds with exactly one task per step and the results passed."""
    http_agent(kubectl, function_url, name="fn", slots=20)
    for w in range(10):
        kubectl.apply({**WF, "metadata": {"name": f"crash-{w}"}, "spec": {"steps": [
            step("a", w), step("b", "{{ steps.a.result.data.out }}", ("a",)),
            step("c", "c", ("a",)), step("d", "d", ("a",)),
            step("e", "{{ steps.b.result.data.out }}", ("b", "c")),
            step("f", "{{ steps.e.result.data.out }}-{{ steps.d.result.data.out }}", ("e", "d"))],
            "outputs": {"f": "{{ steps.f.result.data.out }}"}}})  # fmt: skip
    lease = {"WALLESTARS_LEASE_SECONDS": "3", "WALLESTARS_IDENTITY": "crashy-wf"}
    op = start_operator(
        cluster, tmp_path / "crashy", webhook_service.masters, webhook_service.url, **lease
    )
    rng = random.Random(17)
    try:
        for _ in range(12):
            time.sleep(rng.uniform(0.2, 2.0))
            op.proc.send_signal(signal.SIGKILL)
            op.proc.wait()
            op = start_operator(cluster, tmp_path / "crashy", webhook_service.masters,
                                webhook_service.url, **lease)  # fmt: skip
        for w in range(10):
            st = finished(kubectl, f"crash-{w}", timeout=180)
            assert st["phase"] == "Succeeded", (w, st)
            assert st["outputs"] == {"f": f"{w}-d"}
    finally:
        op.stop()
    tasks = kubectl.json("get", "agenttasks")["items"]
    by_wf: dict[str, list[str]] = {}
    for t in tasks:
        labels = t["metadata"]["labels"]
        by_wf.setdefault(labels["agents.wallestars.io/workflow"], []).append(
            labels["agents.wallestars.io/step"]
        )
    assert {k: sorted(v) for k, v in by_wf.items()} == {
        f"crash-{w}": list("abcdef") for w in range(10)
    }
