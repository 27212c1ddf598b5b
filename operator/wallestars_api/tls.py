"""TLS of the callback endpoint: the webhook service's server context and mutual TLS.

Under mutual TLS each attempt gets its own client certificate from the operator, signed
by the installation's client CA and named for exactly one (task UID, attempt), short
lived (the attempt's timeout and a margin). The webhook service accepts a callback or an
artifact only over a connection whose certificate names that attempt, so a certificate,
like the attempt's HMAC key, speaks for one attempt; the HMAC stays either way.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("wallestars.tls")

CLIENT_CERT_MARGIN = timedelta(minutes=10)  # a callback may arrive after the deadline
CLOCK_SKEW = timedelta(minutes=1)


def attempt_identity(task_uid: str, attempt: int) -> str:
    """The common name of an attempt's client certificate."""
    return f"{task_uid}/{attempt}"


def peer_identity(peercert: Any) -> str | None:
    """The common name of a verified peer certificate (ssl's getpeercert() dict), or None."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def client_cert_problem(peercert: Any, task_uid: str, attempt: int) -> str | None:
    """Why a connection may not speak for this attempt under mutual TLS, or None (pure)."""
    who = peer_identity(peercert)
    if who is None:
        return "mutual TLS: this callback needs the attempt's client certificate"
    if who != attempt_identity(task_uid, attempt):
        return f"mutual TLS: the client certificate is for attempt {who}, not this one"
    return None


def issue_attempt_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    task_uid: str,
    attempt: int,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, str]:
    """A client certificate and its key (PEM) for one attempt, signed by the client CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    signature_only = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())  # fast to make, one per attempt
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, attempt_identity(task_uid, attempt))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime + CLIENT_CERT_MARGIN)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(signature_only, critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


@dataclass
class ServerTLS:
    """The webhook service's TLS context, reloaded when its files change (cert-manager and
    the kubelet replace a mounted Secret's files in place: new handshakes get the new
    certificate, open connections keep theirs)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # mutual TLS: client certificates signed by this CA
    context: ssl.SSLContext = field(init=False)
    stamp: tuple[float, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.load()

    def files(self) -> list[Path]:
        return [
            self.cert_file,
            self.key_file,
            *([self.client_ca_file] if self.client_ca_file else []),
        ]

    def load(self) -> None:
        self.context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            # Optional at the handshake so probes and metrics stay reachable; the
            # callback and artifact handlers require the attempt's certificate.
            self.context.load_verify_locations(cafile=str(self.client_ca_file))
            self.context.verify_mode = ssl.CERT_OPTIONAL
        self.stamp = tuple(p.stat().st_mtime for p in self.files())

    def reload_if_changed(self) -> bool:
        try:
            stamp = tuple(p.stat().st_mtime for p in self.files())
            if stamp == self.stamp:
                return False
            self.load()
        except (OSError, ssl.SSLError) as e:  # half-written during a rotation: next time
            log.warning("TLS files not reloaded: %s", e)
            return False
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True
