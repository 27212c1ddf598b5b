"""The callback endpoint over HTTPS and mutual TLS, end to end on the real control plane.

The webhook service serves TLS with a certificate from a CA made here (as the chart
makes one), requires under mutual TLS each attempt's own client certificate, and keeps
health and metrics on a plain port. The operator passes the CA to the agent and issues
the attempt's client certificate; the real cloud handler (wallestars_cloud) verifies
the service by that CA and presents the certificate. All on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import localcluster
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from harness import (
    TERMINAL_PHASES,
    Kubectl,
    OperatorProcess,
    WebhookService,
    dispatched_task,
    free_port,
    install_chart_rbac,
    phase_is,
    start_operator,
    start_service,
    wait_for,
)
from tlslocal import Tls, make_ca, pem, write_tls
from wallestars_api.tls import issue_attempt_certificate
from wallestars_cloud import handle
from wallestars_sdk import AgentClient, AgentConfig

from tests.servers import Loop, serve

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return write_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def mtls_service(
    cluster: localcluster.Cluster, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WebhookService, int]]:
    install_chart_rbac(cluster)
    ops = free_port()
    svc = start_service(cluster, tmp_path_factory.mktemp("webhooks-tls"), [os.urandom(32)],
                        WALLESTARS_OPS_PORT=str(ops), **tls.service_env())  # type: ignore[arg-type]  # fmt: skip
    yield svc, ops
    svc.stop()


@pytest.fixture(scope="module")
def mtls_operator(
    cluster: localcluster.Cluster,
    mtls_service: tuple[WebhookService, int],
    tls: Tls,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    svc, _ = mtls_service
    op = start_operator(cluster, tmp_path_factory.mktemp("operator-tls"), svc.masters, svc.url,
                        WALLESTARS_CALLBACK_CA_FILE=str(tls.ca),
                        WALLESTARS_CLIENT_CA_CERT_FILE=str(tls.client_ca),
                        WALLESTARS_CLIENT_CA_KEY_FILE=str(tls.client_ca_key))  # fmt: skip
    yield op
    op.stop()


@dataclass
class Function:
    """A cloud function on loopback running the real handler after answering 202."""

    url: str = ""
    received: list[dict[str, Any]] | None = None
    outcomes: list[str] | None = None


@pytest.fixture(scope="module")
def function() -> Iterator[Function]:
    loop = Loop()
    fn = Function(received=[], outcomes=[])
    running: set[asyncio.Task[None]] = set()

    async def run(event: dict[str, Any]) -> None:
        assert fn.outcomes is not None
        fn.outcomes.append(await handle(event))

    async def invoke(request: web.Request) -> web.Response:
        event = await request.json()
        assert fn.received is not None
        fn.received.append(event)
        t = asyncio.create_task(run(event))
        running.add(t)
        t.add_done_callback(running.discard)
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/", invoke)
    fn.url, runner = loop.run(serve(app))
    yield fn
    loop.run(runner.cleanup())
    loop.stop()


def test_a_task_calls_back_over_mutual_tls(
    mtls_operator: OperatorProcess, function: Function, kubectl: Kubectl, tls: Tls
) -> None:
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "fn"},
                   "spec": {"type": "cloud", "capabilities": ["echo"],
                            "cloud": {"provider": "http", "http": {"url": f"{function.url}/"}}}})  # fmt: skip
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "over-mtls"},
                   "spec": {"agentRef": "fn", "type": "echo", "payload": {"data": {"x": 1}}}})  # fmt: skip
    st = wait_for("over-mtls", lambda: phase_is(kubectl, "over-mtls", *TERMINAL_PHASES), timeout=60)
    assert st["phase"] == "Succeeded", st
    assert st["result"]["data"]["echo"] == {"data": {"x": 1}}
    uid = kubectl.json("get", "agenttask", "over-mtls")["metadata"]["uid"]
    [inv] = [i for i in function.received or [] if i["task"]["uid"] == uid]
    assert inv["callbackUrl"].startswith("https://")
    assert inv["callbackCA"] == tls.ca.read_text()
    cert = x509.load_pem_x509_certificate(inv["clientCertificate"]["cert"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{uid}/1"
    client_ca = x509.load_pem_x509_certificate(tls.client_ca.read_bytes())
    assert cert.issuer == client_ca.subject
    # Short lived: the task's timeout (300 s) and a ten-minute margin.
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(minutes=16)


def sdk_client(svc: WebhookService, task: tuple[str, str, str], ca: str,
               cert: tuple[str, str] | None) -> AgentClient:  # fmt: skip
    ns, name, uid = task
    config = AgentConfig(callback_url=f"{svc.callback_url(uid, 1)}", task_uid=uid,
                         task_namespace=ns, task_name=name, attempt=1, callback_ca=ca,
                         client_cert_pem=cert[0] if cert else "",
                         client_key_pem=cert[1] if cert else "")  # fmt: skip
    return AgentClient(config, svc.key(uid, 1))


def progress(client: AgentClient) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        async with client:
            try:
                await client.progress(40)
            except Exception as e:
                return getattr(e, "status", 0), str(e)
        return 200, ""

    return asyncio.run(go())


def test_a_signed_callback_without_the_attempts_certificate_changes_nothing(
    mtls_service: tuple[WebhookService, int], kubectl: Kubectl, tls: Tls
) -> None:
    svc, _ = mtls_service
    name, uid = dispatched_task(kubectl)
    task = (str(kubectl.namespace), name, uid)
    ca = tls.ca.read_text()
    client_ca = (tls.client_ca.read_bytes(), tls.client_ca_key.read_bytes())
    now = datetime.now(UTC)
    other = issue_attempt_certificate(*client_ca, uid, 2, now, timedelta(minutes=5))
    stranger_ca, stranger_key = make_ca("not-ours")
    forged = issue_attempt_certificate(pem(stranger_ca), pem(stranger_key), uid, 1, now,
                                       timedelta(minutes=5))  # fmt: skip

    status, text = progress(sdk_client(svc, task, ca, None))
    assert status == 401 and "needs the attempt's client certificate" in text
    status, text = progress(sdk_client(svc, task, ca, other))
    assert status == 401 and f"for attempt {uid}/2, not this one" in text
    # A certificate from another CA does not get through the handshake: no HTTP answer
    # at all (under TLS 1.3 the client sees the server drop or reset the connection).
    status, text = progress(sdk_client(svc, task, ca, forged))
    assert status == 0, text
    assert any(w in text.lower() for w in ("disconnected", "reset", "certificate")), text
    assert kubectl.json("get", "agenttask", name)["status"]["phase"] == "Dispatched"

    mine = issue_attempt_certificate(*client_ca, uid, 1, now, timedelta(minutes=5))
    assert progress(sdk_client(svc, task, ca, mine)) == (200, "")
    st = kubectl.json("get", "agenttask", name)["status"]
    assert st["phase"] == "Running" and st["progress"] == 40


def test_the_agent_verifies_the_service_by_the_ca_it_is_given(
    mtls_service: tuple[WebhookService, int], kubectl: Kubectl, tls: Tls
) -> None:
    """An agent given another CA (a service impersonated) sends nothing it could read."""
    svc, _ = mtls_service
    name, uid = dispatched_task(kubectl)
    stranger, _ = make_ca("impostor-ca")
    mine = issue_attempt_certificate(tls.client_ca.read_bytes(), tls.client_ca_key.read_bytes(),
                                     uid, 1, datetime.now(UTC), timedelta(minutes=5))  # fmt: skip
    status, text = progress(sdk_client(svc, (str(kubectl.namespace), name, uid),
                                       pem(stranger).decode(), mine))  # fmt: skip
    assert status == 0 and "certificate verify failed" in text
    assert kubectl.json("get", "agenttask", name)["status"]["phase"] == "Dispatched"


def test_the_plain_port_serves_health_and_metrics_only(
    mtls_service: tuple[WebhookService, int], kubectl: Kubectl
) -> None:
    svc, ops = mtls_service
    for path in ("/healthz", "/readyz", "/metrics"):
        assert urllib.request.urlopen(f"http://127.0.0.1:{ops}{path}", timeout=5).status == 200
    _, uid = dispatched_task(kubectl)
    req = urllib.request.Request(f"http://127.0.0.1:{ops}/api/agent-callback?task={uid}&attempt=1",
                                 data=b"{}", method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310
    assert e.value.code == 403 and json.loads(e.value.read())["error"]["reason"] == "https-required"
    # And the TLS port speaks nothing but TLS.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(svc.url.replace("https:", "http:") + "/healthz", timeout=5)  # noqa: S310
