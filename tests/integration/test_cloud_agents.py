"""Cloud agents end to end on the real control plane: the operator invokes the function
through the provider's real client (boto3 against a local Lambda API endpoint; the
Azure HTTP trigger contract on loopback); the real handler code from agent_images/ runs
the task against a loopback API and calls back to the webhook service."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from aiohttp import web
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    OperatorProcess,
    WebhookService,
    credential_secret,
    download,
    phase_is,
    reader_token,
    scrape,
    wait_for,
)

from tests import fake_lambda
from tests.fake_lambda import FakeLambda
from tests.servers import Loop, serve

# The templates' modules, loaded from their folders as Lambda and the Functions host do.
sys.path.insert(0, str(REPO / "agent_images" / "aws_lambda"))
lambda_handler = importlib.import_module("handler")

sys.path.insert(0, str(REPO / "agent_images" / "azure_functions"))
function_app = importlib.import_module("function_app")

pytestmark = pytest.mark.cluster
API_TOKEN = "tok-7f3a9c1e5b"


async def api_server() -> tuple[str, web.AppRunner]:
    """The API under test: JSON items, a header, and a slow endpoint."""

    async def items(_: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": 1, "name": "first"}], "count": 1},
                                 headers={"X-Api-Version": "2"})  # fmt: skip

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.json_response({})

    async def whoami(request: web.Request) -> web.Response:
        """Needs the bearer token and echoes it back, as a careless API would."""
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {API_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"you": auth, "sent": await request.text()})

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_get("/slow", slow)
    app.router.add_post("/whoami", whoami)
    return await serve(app)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Loop, FakeLambda, str, str]]:
    loop = Loop()
    fake = FakeLambda(handler=lambda_handler.handler)
    lambda_url, r1 = loop.run(fake_lambda.serve(fake))
    api, r2 = loop.run(api_server())
    yield loop, fake, lambda_url, api
    loop.run(r1.cleanup())
    loop.run(r2.cleanup())
    loop.stop()


def lambda_agent(k: Kubectl, endpoint: str) -> None:
    credential_secret(k, "aws-creds", AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
                      AWS_SECRET_ACCESS_KEY="not-a-real-secret")  # fmt: skip
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "lambda"},
             "spec": {"type": "cloud", "capabilities": ["api-test", "echo"], "concurrency": 5,
                      "cloud": {"provider": "aws-lambda", "aws": {
                          "functionName": "wallestars-agent", "qualifier": "live", "region": "eu-west-1",
                          "endpointURL": endpoint, "credentialsSecretRef": {"name": "aws-creds"}}}}})  # fmt: skip


def api_task(k: Kubectl, name: str, agent: str, api: str, version: str, **spec: Any) -> None:
    payload = {"requests": [
        {"url": f"{api}/items", "expectStatus": 200, "assertions": [
            {"header": "X-Api-Version", "equals": version},
            {"jsonPath": "$.items[0].name", "equals": "first"},
            {"jsonPath": "$.count", "equals": "1"},
            {"latencyMs": 5000}]},
        {"url": f"{api}/slow", "assertions": [{"status": 200}, {"latencyMs": 5000}]}]}  # fmt: skip
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
             "spec": {"agentRef": agent, "type": "api-test", "payload": payload,
                      "retries": {"limit": 2, "backoffSeconds": 1}, **spec}})  # fmt: skip


def test_lambda_api_test_end_to_end(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    world: tuple[Loop, FakeLambda, str, str],
) -> None:  # fmt: skip
    _, fake, endpoint, api = world
    lambda_agent(kubectl, endpoint)
    wait_for("the Lambda agent to be healthy", lambda: any(
        c["type"] == "Healthy" and c["status"] == "True"
        for c in kubectl.json("get", "agent", "lambda").get("status", {}).get("conditions", [])), timeout=30)  # fmt: skip
    before = len(fake.accepted)
    api_task(kubectl, "api-ok", "lambda", api, "2")
    api_task(kubectl, "api-bad", "lambda", api, "3")
    ok = wait_for("api-ok", lambda: phase_is(kubectl, "api-ok", *TERMINAL_PHASES), timeout=60)
    bad = wait_for("api-bad", lambda: phase_is(kubectl, "api-bad", *TERMINAL_PHASES), timeout=60)

    assert ok["phase"] == "Succeeded", ok
    reqs = ok["result"]["data"]["requests"]
    assert [v["passed"] for v in reqs[0]["assertions"]] == [True] * 5
    assert reqs[1]["assertions"][1]["actual"] >= 300  # the slow endpoint's latency, measured
    assert bad["phase"] == "Failed" and bad["reason"] == "AssertionFailed", bad
    assert len(bad["attempts"]) == 1  # an assertion is not retried
    [header] = [
        v
        for v in bad["result"]["data"]["requests"][0]["assertions"]
        if v["assertion"].startswith("header")
    ]
    assert header == {"assertion": "header X-Api-Version", "passed": False, "actual": "2"}
    # boto3 sent what the Agent says, once per attempt.
    calls = fake.accepted[before:]
    assert len(calls) == 2 and {(c.function, c.qualifier, c.invocation_type) for c in calls} == {
        ("wallestars-agent", "live", "Event")}  # fmt: skip
    event = json.loads(calls[0].payload)
    assert {
        "task",
        "type",
        "payload",
        "attempt",
        "callbackUrl",
        "key",
        "deadline",
        "idempotencyKey",
    } <= set(event)


def test_echo_is_a_task_type_the_api_server_accepts_and_the_handler_runs(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    world: tuple[Loop, FakeLambda, str, str],
) -> None:  # fmt: skip
    """docs/cloud-agents.md lists `echo` as built in; the CRD's enum once refused it."""
    _, _, endpoint, _ = world
    lambda_agent(kubectl, endpoint)
    data = {"hello": "world", "n": 3}
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "echo"},
                   "spec": {"agentRef": "lambda", "type": "echo", "payload": {"data": data}}})  # fmt: skip
    st = wait_for("echo", lambda: phase_is(kubectl, "echo", *TERMINAL_PHASES), timeout=60)
    assert st["phase"] == "Succeeded", st
    assert st["result"]["data"]["echo"] == {"data": data}
    assert st["result"]["data"]["attempt"] == 1


def test_an_event_delivered_twice_ends_the_task_once(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    world: tuple[Loop, FakeLambda, str, str],
) -> None:  # fmt: skip
    _, fake, endpoint, api = world
    lambda_agent(kubectl, endpoint)
    fake.deliveries = 2
    before = len(fake.outcomes)
    try:
        api_task(kubectl, "twice", "lambda", api, "2")
        wait_for("both deliveries to run", lambda: len(fake.outcomes) >= before + 2, timeout=60)
    finally:
        fake.deliveries = 1
    runs = sorted(o["outcome"] for o in fake.outcomes[before:])
    assert runs == ["refused-410", "succeeded"], runs  # the handler really ran twice
    st = phase_is(kubectl, "twice", *TERMINAL_PHASES)
    assert st["phase"] == "Succeeded" and len(st["attempts"]) == 1
    final = [c for c in st["callbacks"] if c["status"] in ("success", "failure")]
    assert len(final) == 1, st["callbacks"]  # the repeat was refused (410), not written


def test_azure_functions_http_trigger_end_to_end(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    world: tuple[Loop, FakeLambda, str, str],
) -> None:  # fmt: skip
    loop, _, _, api = world
    keys: list[str | None] = []

    async def trigger(r: web.Request) -> web.Response:
        """The Functions host: the HTTP trigger's code, then its queue message to the
        queue trigger's code (in a worker thread, as the host runs it)."""
        keys.append(r.headers.get("x-functions-key"))
        queued: list[str] = []

        class Out:
            def set(self, v: str) -> None:
                queued.append(v)

        req = func.HttpRequest("POST", str(r.url), headers=dict(r.headers), body=await r.read())
        resp = function_app.accept(req, Out())
        for body in queued:
            asyncio.get_running_loop().run_in_executor(
                None, function_app.run, func.QueueMessage(body=body)
            )
        return web.Response(status=resp.status_code, body=resp.get_body())

    app = web.Application()
    app.router.add_post("/api/wallestars", trigger)
    base, runner = loop.run(serve(app))
    url = f"{base}/api/wallestars"
    try:
        credential_secret(kubectl, "fn-key", key="the-function-key")
        kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "azure"},
                       "spec": {"type": "cloud", "capabilities": ["api-test"], "concurrency": 2, "cloud": {"provider": "azure-functions",
                                "azure": {"functionURL": url, "functionKeySecretRef": {"name": "fn-key", "key": "key"}}}}})  # fmt: skip
        api_task(kubectl, "az", "azure", api, "2")
        st = wait_for("az", lambda: phase_is(kubectl, "az", *TERMINAL_PHASES), timeout=60)
    finally:
        loop.run(runner.cleanup())
    assert st["phase"] == "Succeeded", st
    assert keys and set(keys) == {"the-function-key"}
    assert st["result"]["data"]["passed"] is True


def test_a_secret_by_reference_reaches_the_function_and_no_output(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    world: tuple[Loop, FakeLambda, str, str],
) -> None:  # fmt: skip
    """headersFrom and bodyFrom: the token from an opted-in Secret authorizes the request;
    the API echoes it back, and it is in no status, Event, log, metric or artifact."""
    _, _, endpoint, api = world
    lambda_agent(kubectl, endpoint)
    credential_secret(kubectl, "api-token", token=API_TOKEN)
    credential_secret(kubectl, "not-opted-in", opt_in=False, token=API_TOKEN)

    def secret_task(name: str, secret: str) -> None:
        kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name},
                       "spec": {"agentRef": "lambda", "type": "api-test", "retries": {"limit": 1},
                                "payload": {"url": f"{api}/whoami", "method": "POST", "expectStatus": 200,
                                            "bodyFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}}})  # fmt: skip

    # The header's value is "Bearer <token>": a Secret holds only the token, so the
    # request carries it in the header by headersFrom of its own key.
    credential_secret(kubectl, "api-bearer", authorization=f"Bearer {API_TOKEN}")
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                   "metadata": {"name": "with-secret"},
                   "spec": {"agentRef": "lambda", "type": "api-test",
                            "payload": {"url": f"{api}/whoami", "method": "POST",
                                        "headersFrom": {"Authorization": {"secretKeyRef": {"name": "api-bearer", "key": "authorization"}}},
                                        "bodyFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}},
                                        "expectStatus": 200,
                                        "assertions": [{"jsonPath": "$.you", "exists": True}]}}})  # fmt: skip
    secret_task("refused", "not-opted-in")
    ok = wait_for(
        "with-secret", lambda: phase_is(kubectl, "with-secret", *TERMINAL_PHASES), timeout=60
    )
    refused = wait_for(
        "refused", lambda: phase_is(kubectl, "refused", *TERMINAL_PHASES), timeout=60
    )
    assert ok["phase"] == "Succeeded", ok  # the API accepted the token
    assert refused["phase"] == "Failed" and refused["error"]["code"] == "SecretRefused", refused
    assert refused["attempts"][0]["reason"] == "SecretRefused"
    assert "agents.wallestars.io/credential" in refused["error"]["message"]
    assert len(refused["attempts"]) == 1  # the owner fixes the Secret; a retry cannot
    # The page echoed the token back; it was redacted before anything was written.
    assert "[redacted]" in json.dumps(ok["result"])
    outputs = {
        "tasks": kubectl("get", "agenttasks", "-o", "json"),
        "events": kubectl("get", "events", "-o", "json"),
        "operator log": operator.log.read_text(),
        "webhook log": webhook_service.log.read_text(),
        "operator metrics": scrape(operator.metrics_url),
        "webhook metrics": scrape(f"{webhook_service.url}/metrics"),
    }
    for artifact in ok["result"].get("artifacts", []):
        outputs[artifact["name"]] = download(
            webhook_service.url, artifact["uri"], reader_token(kubectl)
        ).decode(errors="replace")
    leaked = [where for where, text in outputs.items() if API_TOKEN in text]
    assert leaked == [], f"the secret value is in: {leaked}"
