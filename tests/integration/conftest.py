"""Fixtures for the webhook service as a real process on loopback, under its own RBAC."""

from __future__ import annotations

import os
from collections.abc import Iterator

import localcluster
import pytest
from harness import WebhookService, install_chart_rbac, start_service


@pytest.fixture(scope="session")
def webhook_service(
    cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookService]:
    install_chart_rbac(cluster)
    masters = [os.urandom(32), os.urandom(32)]  # current first, the previous one still accepted
    svc = start_service(cluster, tmp_path_factory.mktemp("webhooks"), masters)
    yield svc
    svc.stop()
