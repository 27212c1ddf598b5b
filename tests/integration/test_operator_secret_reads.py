"""An Agent's Secret that cannot be read when an attempt starts (issue #13, item 4).

A module of its own: its operator must be the only one running (the module-scoped
operator of test_operator_secrets.py would hold the Lease and act instead).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import localcluster
import pytest
from harness import (
    Kubectl,
    OperatorProcess,
    WebhookService,
    http_agent,
    phase_is,
    start_operator,
    task,
    wait_for,
)

from tests.integration.test_operator_secrets import ready

pytestmark = pytest.mark.cluster


@pytest.fixture
def uncached_operator(
    cluster: localcluster.Cluster, webhook_service: WebhookService, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """An operator that reads an Agent's Secret on every invocation and probes rarely, so
    a Secret that goes away between a probe and an invocation is read, and missed."""
    op = start_operator(cluster, tmp_path / "op", webhook_service.masters, webhook_service.url,
                        WALLESTARS_SECRET_CACHE_SECONDS="0", WALLESTARS_HEALTH_PROBE_SECONDS="600")  # fmt: skip
    yield op
    op.stop()


def test_an_unreadable_secret_fails_the_attempt_at_once_naming_it(
    uncached_operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    """The Secret disappears after the Agent was found Ready: the attempt fails at once as
    DispatchFailed naming the Secret (it used to sit in Dispatched until its timeout, the
    read's error escaping the invocation), and is retried by the task's policy."""
    http_agent(kubectl, function_url)
    wait_for("Ready", lambda: (c := ready(kubectl, "fn")) and c["status"] == "True", timeout=60)
    kubectl("delete", "secret", "fn-auth")
    t0 = time.monotonic()
    task(kubectl, "orphan", "fn", retries={"limit": 1, "backoffSeconds": 1, "jitter": 0})
    st = wait_for("Failed", lambda: phase_is(kubectl, "orphan", "Failed", "Succeeded"), timeout=60)
    took = time.monotonic() - t0
    assert (st["reason"], st["attempt"]) == ("DispatchFailed", 2), st
    assert f"Secret {kubectl.namespace}/fn-auth does not exist" in st["error"]["message"]
    assert took < 30, f"{took:.0f}s: the attempt waited for something (timeout is 300 s)"
