"""TLS of the callback endpoint: attempts' client certificates and what agents are given."""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from wallestars_api.tls import (
    attempt_identity,
    client_cert_problem,
    issue_attempt_certificate,
    peer_identity,
)
from wallestars_operator.manifests import browser_job, invocation, key_secret

from tests.unit.test_manifests import AGENT, CFG, TASK

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def ca() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client-ca")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_an_attempts_certificate_names_it_and_lives_as_long_as_it_may() -> None:
    ca_cert, ca_key = ca()
    cert_pem, key_pem = issue_attempt_certificate(ca_cert, ca_key, "uid-1", 3, NOW,
                                                  timedelta(seconds=300))  # fmt: skip
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "uid-1/3"
    assert cert.issuer == x509.load_pem_x509_certificate(ca_cert).subject
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + timedelta(seconds=300) + timedelta(minutes=10)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # The key is the certificate's, and the pair loads as a client's chain.
    ctx = ssl.create_default_context()
    with tempfile.TemporaryDirectory() as d:
        Path(d, "c").write_text(cert_pem)
        Path(d, "k").write_text(key_pem)
        ctx.load_cert_chain(Path(d, "c"), Path(d, "k"))


def peer(cn: str) -> dict[str, Any]:
    """ssl's getpeercert() form."""
    return {"subject": ((("countryName", "XX"),), (("commonName", cn),)), "issuer": ()}


def test_only_the_attempts_own_certificate_speaks_for_it() -> None:
    assert peer_identity(peer("u/1")) == "u/1"
    assert client_cert_problem(peer(attempt_identity("u", 1)), "u", 1) is None
    assert "needs the attempt's client certificate" in (client_cert_problem({}, "u", 1) or "")
    assert "needs the attempt's client certificate" in (client_cert_problem(None, "u", 1) or "")
    assert "for attempt u/2, not this one" in (client_cert_problem(peer("u/2"), "u", 1) or "")
    assert client_cert_problem(peer("v/1"), "u", 1) is not None


def test_agents_are_given_the_ca_and_under_mutual_tls_their_certificate() -> None:
    plain = browser_job(TASK, AGENT, 1, CFG)
    env = {
        e["name"]: e.get("value") for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "WALLESTARS_CALLBACK_CA" not in env and "WALLESTARS_CLIENT_CERT_FILE" not in env
    assert "callbackCA" not in invocation(TASK, 1, "a", "k", CFG, NOW)

    cfg = dataclasses.replace(CFG, callback_base="https://webhooks:8443",
                              callback_ca="-----BEGIN CERTIFICATE-----…", client_ca=ca())  # fmt: skip
    job = browser_job(TASK, AGENT, 1, cfg)
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["WALLESTARS_CALLBACK_CA"] == cfg.callback_ca
    assert env["WALLESTARS_CALLBACK_URL"].startswith("https://webhooks:8443/")
    assert env["WALLESTARS_CLIENT_CERT_FILE"] == "/var/run/wallestars/key/tls.crt"
    assert env["WALLESTARS_CLIENT_KEY_FILE"] == "/var/run/wallestars/key/tls.key"
    [vol] = [v for v in pod["volumes"] if v["name"] == "key"]
    assert [i["key"] for i in vol["secret"]["items"]] == ["key", "tls.crt", "tls.key"]
    secret = key_secret(TASK, 1, "a", "whsec_x", ("CERT", "KEY"))
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "key": "whsec_x", "tls.crt": "CERT", "tls.key": "KEY"}  # fmt: skip
    assert json.dumps(invocation(TASK, 1, "a", "k", cfg, NOW)["callbackCA"]) == json.dumps(
        cfg.callback_ca
    )


def test_cloud_agents_outside_the_cluster_call_back_through_the_public_host() -> None:
    cfg = dataclasses.replace(CFG, callback_base="https://webhooks.ns.svc:8080",
                              cloud_callback_base="https://callbacks.example.com/")  # fmt: skip
    inv = invocation(TASK, 2, "a", "k", cfg, NOW)
    assert inv["callbackUrl"].startswith("https://callbacks.example.com/api/agent-callback?")
    env = {e["name"]: e.get("value") for e in
           browser_job(TASK, AGENT, 2, cfg)["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["WALLESTARS_CALLBACK_URL"].startswith("https://webhooks.ns.svc:8080/api/")
    same = invocation(TASK, 2, "a", "k", dataclasses.replace(cfg, cloud_callback_base=""), NOW)
    assert same["callbackUrl"] == env["WALLESTARS_CALLBACK_URL"]
