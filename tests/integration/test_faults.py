"""The operator against an API server that errs (hack/faultproxy.py between them).

Issue #20: a cloud task whose every invocation is refused (HTTP 401: the Agent's auth
header is wrong) must end each attempt within seconds, whatever the API server does to
the write that records the refusal — 500s, 503s and 429s, writes applied but answered
500, slow answers, reset connections, cut watches, 410 Gone on resume — and across
operator SIGKILLs: every task Failed with reason DispatchFailed, every attempt ended
as DispatchFailed (never Timeout), each task's end a few seconds after its last
refusal plus the backoff.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import faultproxy
import localcluster
import pytest
from harness import (
    TERMINAL_PHASES,
    Kubectl,
    WebhookService,
    credential_secret,
    free_port,
    http_agent,
    launch_operator,
    start_operator,
    wait_for,
)
from wallestars_api.lifecycle import parse_ts

pytestmark = pytest.mark.cluster
TASKS = 60
FAULTS = {
    "error": 0.05,  # 500 / 503 / 429 with Retry-After
    "applied_then_error": 0.05,
    "slow": 0.03,
    "slow_seconds": 1.5,
    "reset": 0.01,
    "watch_cut": [20, 200],
    "watch_gone": 0.3,
}


def test_refused_invocations_end_their_attempts_within_seconds_under_api_faults(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    function_url: str,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    proxy = faultproxy.start(cluster.server, cluster.pki / "ca.crt", free_port())
    env = {"WALLESTARS_LEASE_SECONDS": "3", "WALLESTARS_IDENTITY": "faulty"}
    # Every invocation answered 401: the Agent's auth header is not the function's.
    credential_secret(kubectl, "fn-auth", authorization="Bearer wrong-token")
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "fn"},
                   "spec": {"type": "cloud", "capabilities": ["custom"], "concurrency": 20,
                            "cloud": {"provider": "http", "http": {"url": function_url,
                                      "authHeaderSecretRef": {"name": "fn-auth", "key": "authorization"}}}}})  # fmt: skip
    op = start_operator(cluster, tmp_path / "op", webhook_service.masters, webhook_service.url,
                        api_url=proxy.url, **env)  # fmt: skip
    try:
        proxy.set(**FAULTS)
        kubectl.apply({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": f"r{i}"},
             "spec": {"agentRef": "fn", "type": "custom", "payload": {"data": {}},
                      "retries": {"limit": 3, "backoffSeconds": 1, "jitter": 0}}}
            for i in range(TASKS)]})  # fmt: skip
        for pause in (6, 9):  # two SIGKILLs mid-run; the same pod name on restart
            time.sleep(pause)
            op.proc.send_signal(signal.SIGKILL)
            op.proc.wait()
            op = start_operator(cluster, tmp_path / "op", webhook_service.masters,
                                webhook_service.url, api_url=proxy.url, **env)  # fmt: skip

        def unfinished() -> list[tuple[str, str]]:
            items = kubectl.json("get", "agenttasks")["items"]
            return [(t["metadata"]["name"], json.dumps(t.get("status", {}))[:300]) for t in items
                    if (t.get("status") or {}).get("phase") not in TERMINAL_PHASES]  # fmt: skip

        try:
            wait_for("every task to end", lambda: not unfinished(), timeout=180, interval=1)
        except AssertionError:
            raise AssertionError(f"still live: {unfinished()[:5]}") from None
        stats = proxy.stats()
    finally:
        op.stop()
        proxy.stop()
    # The faults really happened, to the operator's own requests.
    for fault in ("error-500", "applied-then-error", "watch-cut"):
        assert stats.get(fault, 0) > 0, stats
    tasks = kubectl.json("get", "agenttasks")["items"]
    assert len(tasks) == TASKS
    for t in tasks:
        st: dict[str, Any] = t["status"]
        name = t["metadata"]["name"]
        assert (st["phase"], st["reason"]) == ("Failed", "DispatchFailed"), (name, st)
        assert "HTTP 401" in st["error"]["message"], (name, st["error"])
        attempts = st["attempts"]
        assert [a["attempt"] for a in attempts] == [1, 2, 3, 4], (name, attempts)
        assert {a["reason"] for a in attempts} == {"DispatchFailed"}, (name, attempts)
        # Ended within seconds of its last refusal (no attempt timeout: that is 300 s).
        url = f"{function_url}invoked-at/{t['metadata']['uid']}"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (the loopback function)
            last = max(json.loads(r.read()))
        ended = parse_ts(st["completionTime"])
        assert ended is not None
        # completionTime has whole seconds; a restart costs a few seconds of its own.
        assert ended.timestamp() - last <= 15, (name, ended.timestamp() - last)


def test_operator_outlives_cut_discovery_answers(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    function_url: str,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    """kopf stops when its discovery of the API's resources gets a cut answer (its reads of
    a response body are not retried, kopf#839); the operator runs kopf again after a
    backoff instead of exiting, and then does its work."""
    proxy = faultproxy.start(cluster.server, cluster.pki / "ca.crt", free_port())
    # Every discovery answer (/api, /apis, /apis/<group>/<version>) cut after 64 bytes.
    proxy.set(reset=1.0, only=r"^GET /apis?(/[^/]+){0,2}$")
    http_agent(kubectl, function_url, name="fn-d")
    # Not live while every discovery answer is cut: kopf never gets past its start.
    op, _ = launch_operator(cluster, tmp_path / "op", webhook_service.masters,
                            webhook_service.url, api_url=proxy.url)  # fmt: skip
    try:
        wait_for("kopf to fail on a cut discovery answer twice", lambda: "kopf stopped" in
                 op.log.read_text() and op.log.read_text().count("kopf stopped") >= 2, timeout=60)  # fmt: skip
        assert op.proc.poll() is None, op.log.read_text()[-3000:]
        assert proxy.stats().get("reset", 0) >= 2
        proxy.set()  # the API server answers whole again
        kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": "after-cuts"},
                       "spec": {"agentRef": "fn-d", "type": "custom", "payload": {"data": {}}}})  # fmt: skip
        wait_for("the task to succeed", lambda: (kubectl.json("get", "agenttask", "after-cuts")
                 .get("status") or {}).get("phase") == "Succeeded", timeout=60)  # fmt: skip
        assert op.proc.poll() is None
    finally:
        op.stop()
        proxy.stop()


def test_operator_waits_out_the_api_servers_retry_after(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    function_url: str,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    """Every status write answered 429 with Retry-After: 3 s (as API Priority and
    Fairness does) for 10 s: the operator writes each task's status again no sooner than
    the 3 s asked for (its own backoff starts far shorter), and its work is done once
    writes pass."""
    proxy = faultproxy.start(cluster.server, cluster.pki / "ca.crt", free_port())
    http_agent(kubectl, function_url, name="fn-ra")
    op = start_operator(cluster, tmp_path / "op", webhook_service.masters, webhook_service.url,
                        api_url=proxy.url, WALLESTARS_IDENTITY="retry-after")  # fmt: skip
    try:
        wait_for("the operator's first pass",
                 lambda: op.metric("wallestars_operator_reconcile_pass_duration_seconds_count") >= 1)  # fmt: skip
        proxy.set(error=1.0, codes=[429], retry_after=3, only=r"^PATCH .*/agenttasks/[^/]+/status$")
        kubectl.apply({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": f"ra{i}"},
             "spec": {"agentRef": "fn-ra", "type": "custom", "payload": {"data": {}}}}
            for i in range(10)]})  # fmt: skip
        time.sleep(10)
        refused = proxy.errors()
        proxy.set()
        wait_for("every task to succeed", lambda: all(
            (t.get("status") or {}).get("phase") == "Succeeded"
            for t in kubectl.json("get", "agenttasks")["items"]
            if t["metadata"]["name"].startswith("ra")), timeout=60)  # fmt: skip
        waited = op.metric("wallestars_operator_retry_after_wait_seconds")
    finally:
        op.stop()
        proxy.stop()
    by_task: dict[str, list[float]] = {}
    for t, line, _ in refused:
        by_task.setdefault(line, []).append(t)
    assert len(by_task) == 10, by_task.keys()
    gaps = [b - a for times in by_task.values() for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 10, by_task  # each task's write was refused and tried again
    assert min(gaps) >= 2.9, sorted(gaps)[:5]
    assert waited > 0
