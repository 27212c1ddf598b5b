"""Fixtures for the webhook service as a real process on loopback, under its own RBAC."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import localcluster
import pytest
from harness import (
    REPO,
    OperatorProcess,
    WebhookService,
    free_port,
    install_chart_rbac,
    start_operator,
    start_service,
    wait_for,
)


@pytest.fixture(scope="session")
def webhook_service(
    cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookService]:
    install_chart_rbac(cluster)
    masters = [os.urandom(32), os.urandom(32)]  # current first, the previous one still accepted
    svc = start_service(cluster, tmp_path_factory.mktemp("webhooks"), masters)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="module")
def operator(
    cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as a process, one per test module."""
    op = start_operator(
        cluster, tmp_path_factory.mktemp("operator"), webhook_service.masters, webhook_service.url
    )
    yield op
    op.stop()
