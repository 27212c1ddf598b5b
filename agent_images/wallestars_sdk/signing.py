"""Callback signatures: Standard Webhooks, plus the seed's ``x-agent-*`` scheme.

Standard Webhooks (https://www.standardwebhooks.com): headers ``webhook-id``,
``webhook-timestamp`` (integer seconds) and ``webhook-signature`` (space-separated
``v1,<base64 HMAC-SHA256 over "id.timestamp.body">``, several for key rotation).
Seed scheme: ``x-agent-id``, ``x-agent-timestamp`` and ``x-agent-signature`` (hex
HMAC-SHA256 over timestamp + body).

Both are checked over the raw body bytes, in constant time, with every header parsed
strictly: a header that is missing, repeated or malformed is a bad signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
MAX_SIGNATURES = 8
# Ids are opaque tokens; a dot would blur the boundaries of "id.timestamp.body".
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,13}")  # seconds, or milliseconds (13 digits) where allowed
_HEX_SIG = re.compile(r"(?:sha256=)?([0-9a-f]{64})")

# headers.getall(name) -> every value of that header (aiohttp's CIMultiDict has it)
GetAll = Callable[[str], Sequence[str]]


class SignatureError(Exception):
    """The callback is not authentic; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    webhook_id: str
    timestamp: int
    scheme: str  # "standard" or "seed"


def _mac(key: bytes, *parts: bytes) -> bytes:
    m = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        m.update(p)
    return m.digest()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,<base64>``."""
    mac = _mac(key, f"{webhook_id}.{timestamp}.".encode(), body)
    return "v1," + base64.b64encode(mac).decode()


def sign_headers(
    keys: Iterable[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per key."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, webhook_id, timestamp, body) for k in keys),
    }


def read_content(path: str) -> bytes:
    """What a signed read (a GET with no body) signs in place of a body: the method and
    the path, so a signature read off one request is good for no other."""
    return b"GET " + path.encode()


def sign_seed(key: bytes, timestamp: int, body: bytes) -> str:
    """The seed scheme's signature: hex HMAC-SHA256 over timestamp + body."""
    return _mac(key, str(timestamp).encode(), body).hex()


def _one(getall: GetAll, name: str) -> str:
    values = list(getall(name))
    if not values:
        raise SignatureError("missing-header", f"header {name} is missing")
    if len(values) > 1:
        raise SignatureError("duplicate-header", f"header {name} is repeated")
    return values[0]


# A timestamp this large is milliseconds: as seconds it would be the year 5138.
MILLIS_FROM = 10**11


def _timestamp(text: str, now: float, tolerance: int, millis: bool = False) -> int:
    """Whole seconds since the epoch; with ``millis`` (the plan's x-agent-timestamp, as
    JavaScript's Date.now() gives) milliseconds are accepted too, told apart by size."""
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureError("bad-timestamp", "the timestamp must be whole seconds since the epoch")
    ts = int(text)
    if millis and ts >= MILLIS_FROM:
        ts //= 1000
    if abs(now - ts) > tolerance:
        raise SignatureError("stale-timestamp", f"the timestamp is more than {tolerance}s from now")
    return ts


def _parse_signatures(header: str) -> list[bytes]:
    """The v1 signatures of a webhook-signature header; other versions are skipped."""
    entries = header.split(" ")
    if len(entries) > MAX_SIGNATURES or any(not e for e in entries):
        raise SignatureError("bad-signature-header", "malformed webhook-signature header")
    sigs: list[bytes] = []
    for entry in entries:
        version, sep, value = entry.partition(",")
        if not sep or not version:
            raise SignatureError("bad-signature-header", "each signature must be version,base64")
        if version != "v1":
            continue  # a scheme we do not know (e.g. v1a); the spec says to skip it
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as e:
            raise SignatureError("bad-signature-header", "a v1 signature is not base64") from e
        if len(raw) != 32:
            raise SignatureError("bad-signature-header", "a v1 signature must be 32 bytes")
        sigs.append(raw)
    if not sigs:
        raise SignatureError("bad-signature-header", "no v1 signature")
    return sigs


def any_match(candidates: Sequence[bytes], expected: Iterable[bytes]) -> bool:
    """True if any expected MAC equals any candidate; every pair compared in constant time."""
    ok = False
    for want in expected:
        for got in candidates:
            ok |= hmac.compare_digest(want, got)
    return ok


@dataclass(frozen=True)
class StandardHeaders:
    webhook_id: str
    timestamp_text: str
    timestamp: int
    signatures: list[bytes]

    @property
    def signed_prefix(self) -> bytes:
        """What precedes the body in the signed content: ``id.timestamp.``."""
        return f"{self.webhook_id}.{self.timestamp_text}.".encode()


def parse_standard_headers(
    getall: GetAll, now: float, tolerance: int = TOLERANCE_SECONDS
) -> StandardHeaders:
    """The Standard Webhooks headers, strictly parsed (before any body is read)."""
    webhook_id = _one(getall, "webhook-id")
    if not _ID.fullmatch(webhook_id):
        raise SignatureError("bad-id", "webhook-id must be 1-128 of A-Z a-z 0-9 _ -")
    ts_text = _one(getall, "webhook-timestamp")
    sigs = _parse_signatures(_one(getall, "webhook-signature"))
    ts = _timestamp(ts_text, now, tolerance)
    return StandardHeaders(webhook_id, ts_text, ts, sigs)


def verify(
    keys: Sequence[bytes],
    getall: GetAll,
    body: bytes,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> Verified:
    """Check a callback's signature over the raw ``body`` with any of ``keys``.

    Standard Webhooks headers are used when any ``webhook-*`` header is present, the
    seed's ``x-agent-*`` headers otherwise. Raises SignatureError.
    """
    if getall("webhook-id") or getall("webhook-signature") or getall("webhook-timestamp"):
        h = parse_standard_headers(getall, now, tolerance)
        if not any_match(h.signatures, (_mac(k, h.signed_prefix, body) for k in keys)):
            raise SignatureError("bad-signature", "no signature matches")
        return Verified(h.webhook_id, h.timestamp, "standard")
    if getall("x-agent-signature") or getall("x-agent-timestamp"):
        _one(getall, "x-agent-id")
        ts_text = _one(getall, "x-agent-timestamp")
        m = _HEX_SIG.fullmatch(_one(getall, "x-agent-signature"))
        if not m:
            raise SignatureError("bad-signature-header", "x-agent-signature must be 64 hex digits")
        ts = _timestamp(ts_text, now, tolerance, millis=True)
        got = bytes.fromhex(m.group(1))
        if not any_match([got], (_mac(k, ts_text.encode(), body) for k in keys)):
            raise SignatureError("bad-signature", "no signature matches")
        # The seed scheme has no message id: the signature itself identifies the message.
        return Verified("seed-" + m.group(1)[:40], ts, "seed")
    raise SignatureError("missing-header", "no webhook-signature or x-agent-signature header")
