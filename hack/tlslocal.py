"""A CA, a serving certificate and a client CA for the webhook service on this machine
(the tests and benchmarks; the chart makes its own with Helm's genCA)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def pem(obj: Any) -> bytes:
    """A certificate or a private key, PEM."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))  # fmt: skip


def make_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    return cert, key


def serving_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                 ip: str = "127.0.0.1") -> tuple[bytes, bytes]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wallestars-webhooks")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    return pem(cert), pem(key)


@dataclass
class Tls:
    dir: Path
    ca: Path  # the serving CA, as agents are given it
    cert: Path
    key: Path
    client_ca: Path
    client_ca_key: Path

    def service_env(self, mutual: bool = True) -> dict[str, str]:
        """The webhook service's settings for these files."""
        env = {"WALLESTARS_TLS_CERT_FILE": str(self.cert), "WALLESTARS_TLS_KEY_FILE": str(self.key)}
        if mutual:
            env["WALLESTARS_TLS_CLIENT_CA_FILE"] = str(self.client_ca)
        return env


def write_tls(d: Path, ip: str = "127.0.0.1") -> Tls:
    """Fresh CAs and a serving certificate for ``ip``, as files in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca("wallestars-webhooks-ca")
    cert, key = serving_cert(ca, ca_key, ip)
    client_ca, client_ca_key = make_ca("wallestars-client-ca")
    for name, data in {"ca.crt": pem(ca), "tls.crt": cert, "tls.key": key,
                       "client-ca.crt": pem(client_ca), "client-ca.key": pem(client_ca_key)}.items():  # fmt: skip
        (d / name).write_bytes(data)
    return Tls(
        d, d / "ca.crt", d / "tls.crt", d / "tls.key", d / "client-ca.crt", d / "client-ca.key"
    )
