"""A function behind Google's IAM (Cloud Run functions) as a cloud agent, end to end.

The operator mints a Google ID token with google-auth from a service-account key in an
opted-in Secret (the key's token_uri points at a local stand-in for Google's token
endpoint, which checks the key's signed assertion and signs the ID token); a stand-in
for Google's front end admits the request only with a valid token for the function's
URL, then hands it to the template's own entry point (agent_images/gcp_functions/main.py),
whose handler runs the task and calls back to the webhook service. All on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    OperatorProcess,
    WebhookService,
    phase_is,
    wait_for,
)

from tests.servers import Loop, serve

pytestmark = pytest.mark.cluster

# The template's module, loaded from its folder as the Functions runtime does.
sys.path.insert(0, str(REPO / "agent_images" / "gcp_functions"))
_spec = importlib.util.spec_from_file_location(
    "gcp_main", REPO / "agent_images" / "gcp_functions" / "main.py"
)
assert _spec and _spec.loader
gcp_main = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gcp_main)


def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class Google:
    """Stand-ins for Google's token endpoint and its front end to one function."""

    sa_private: str
    sa_public: str
    google_private: str
    google_public: str
    url: str = ""
    minted: list[str] = field(default_factory=list)  # audiences of tokens issued
    admitted: list[dict[str, Any]] = field(default_factory=list)  # token claims let through
    refused: int = 0

    async def token(self, request: web.Request) -> web.Response:
        form = parse_qs(await request.text())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:  # signed by the service account's key, for Google's endpoint (google-auth's aud)
            claims = jwt.decode(form["assertion"][0], certs=self.sa_public,
                                audience="https://oauth2.googleapis.com/token")  # fmt: skip
        except ValueError as e:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(e)}, status=400
            )
        aud = claims["target_audience"]
        self.minted.append(aud)
        now = int(time.time())
        signer = crypt.RSASigner.from_string(self.google_private, "google-1")
        id_token = jwt.encode(signer, {"iss": "https://accounts.google.com", "aud": aud,
                                       "sub": claims["iss"], "email": claims["iss"],
                                       "iat": now, "exp": now + 3600})  # fmt: skip
        return web.json_response({"id_token": id_token.decode()})

    async def function(self, request: web.Request) -> web.Response:
        """Google's front end: a valid ID token for this URL, or 401; then the function."""
        auth = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), certs={"google-1": self.google_public},
                                audience=f"{self.url}/fn")  # fmt: skip
        except ValueError:
            self.refused += 1
            return web.Response(status=401, text="unauthenticated")
        self.admitted.append(claims)
        body = await request.read()
        text, status, headers = gcp_main.agent(FlaskLikeRequest(body))
        return web.Response(text=text, status=status, headers=headers)


@dataclass
class FlaskLikeRequest:
    body: bytes

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def google() -> Iterator[Google]:
    loop = Loop()
    sa_private, sa_public = rsa_pem()
    g_private, g_public = rsa_pem()
    g = Google(sa_private, sa_public, g_private, g_public)
    app = web.Application()
    app.router.add_post("/token", g.token)
    app.router.add_post("/fn", g.function)
    url, runner = loop.run(serve(app))
    g.url = url
    yield g
    for t in gcp_main.RUNNING:
        t.join(timeout=30)
    loop.run(runner.cleanup())
    loop.stop()


def sa_key(g: Google) -> str:
    return json.dumps({
        "type": "service_account", "project_id": "wallestars-test", "private_key_id": "sa-1",
        "private_key": g.sa_private,
        "client_email": "operator@wallestars-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{g.url}/token",
    })  # fmt: skip


def key_secret(kubectl: Kubectl, name: str, key_json: str) -> None:
    """The service-account key in a Secret that opts in (the key file's usual name)."""
    kubectl.apply({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "labels": {"agents.wallestars.io/credential": "true"}},
                   "stringData": {"key.json": key_json}})  # fmt: skip


def test_an_id_token_minted_by_the_operator_admits_the_invocation(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl, google: Google
) -> None:
    key_secret(kubectl, "gcp-sa", sa_key(google))
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "run-fn"},
                   "spec": {"type": "cloud", "capabilities": ["echo"], "concurrency": 4,
                            "cloud": {"provider": "http", "http": {
                                "url": f"{google.url}/fn",
                                "googleIdToken": {"serviceAccountSecretRef": {"name": "gcp-sa"}}}}}})  # fmt: skip
    for name in ("gcp-1", "gcp-2"):
        kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name},
                       "spec": {"agentRef": "run-fn", "type": "echo", "payload": {"data": {"n": name}}}})  # fmt: skip
    for name in ("gcp-1", "gcp-2"):
        st = wait_for(name, lambda n=name: phase_is(kubectl, n, *TERMINAL_PHASES), timeout=60)  # type: ignore[misc]
        assert st["phase"] == "Succeeded", st
        assert st["result"]["data"]["echo"] == {"data": {"n": name}}
    # One token for the function's URL, minted once and reused for the second task.
    assert google.minted == [f"{google.url}/fn"]
    assert len(google.admitted) == 2 and google.refused == 0
    assert {c["email"] for c in google.admitted} == {
        "operator@wallestars-test.iam.gserviceaccount.com"
    }


def test_without_a_valid_token_the_function_is_never_reached(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl, google: Google
) -> None:
    """A key the token endpoint refuses (another key signed the assertion): no token, so
    nothing is sent; the attempt fails with the endpoint's answer."""
    other_private, _ = rsa_pem()
    bad = json.loads(sa_key(google)) | {"private_key": other_private}
    key_secret(kubectl, "gcp-bad", json.dumps(bad))
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "bad-fn"},
                   "spec": {"type": "cloud", "capabilities": ["echo"],
                            "cloud": {"provider": "http", "http": {
                                "url": f"{google.url}/fn",
                                "googleIdToken": {"serviceAccountSecretRef": {"name": "gcp-bad"}}}}}})  # fmt: skip
    before = len(google.admitted)
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "gcp-bad"},
                   "spec": {"agentRef": "bad-fn", "type": "echo", "payload": {}, "retries": {"limit": 0}}})  # fmt: skip
    st = wait_for("gcp-bad", lambda: phase_is(kubectl, "gcp-bad", *TERMINAL_PHASES), timeout=60)
    assert st["phase"] == "Failed" and st["error"]["code"] == "DispatchFailed", st
    assert (
        "no Google ID token" in st["error"]["message"] and "invalid_grant" in st["error"]["message"]
    )
    assert len(google.admitted) == before
