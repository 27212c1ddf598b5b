"""Sign-in sessions: the caller's own token, sealed in an HttpOnly cookie (pure).

The cookie holds the token encrypted and authenticated (AES-GCM) with the console's
session key, so any replica holding the key can read it and nobody else can, and the
console keeps no session store. A session expires after ``max_age`` seconds; the token
inside stays valid only as long as the API server accepts it. Every state-changing
request made with the cookie must also carry the session's CSRF token (a MAC of the
session's random id), in a form field or the ``X-CSRF-Token`` header; the cookie is
SameSite=Strict besides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WS_TOKEN_PROTOCOL = "base64url.bearer.authorization.k8s.io."  # noqa: S105 (a prefix, as the API server takes it)

COOKIE = "wallestars_session"
MAX_TOKEN = 16384


@dataclass(frozen=True)
class Session:
    sid: str
    token: str
    user: str
    expires: float


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Sealer:
    def __init__(self, key: bytes, max_age: float = 8 * 3600) -> None:
        if len(key) < 32:
            raise ValueError("the session key must be at least 32 bytes")
        self.aead = AESGCM(hashlib.sha256(b"wallestars-console/session/v1" + key).digest())
        self.mac_key = hashlib.sha256(b"wallestars-console/csrf/v1" + key).digest()
        self.max_age = max_age

    def seal(self, token: str, user: str, now: float) -> tuple[str, Session]:
        if not token or len(token) > MAX_TOKEN:
            raise ValueError("a token of 1 to 16384 characters")
        s = Session(secrets.token_urlsafe(18), token, user, now + self.max_age)
        nonce = os.urandom(12)
        raw = json.dumps({"i": s.sid, "t": s.token, "u": s.user, "e": s.expires}).encode()
        return _b64(nonce + self.aead.encrypt(nonce, raw, COOKIE.encode())), s

    def open(self, cookie: str | None, now: float) -> Session | None:
        """The session in a cookie, or None if it is absent, forged, altered or expired."""
        if not cookie or len(cookie) > 2 * MAX_TOKEN:
            return None
        try:
            blob = _unb64(cookie)
            raw = self.aead.decrypt(blob[:12], blob[12:], COOKIE.encode())
            d = json.loads(raw)
            s = Session(str(d["i"]), str(d["t"]), str(d["u"]), float(d["e"]))
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None
        return s if s.expires > now else None

    def csrf(self, s: Session) -> str:
        return _b64(hmac.new(self.mac_key, s.sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, s: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf(s), given)


def cookie_attributes(max_age: float) -> dict[str, object]:
    """HttpOnly, Secure, SameSite=Strict, the whole site (aiohttp's set_cookie keywords)."""
    return {
        "httponly": True,
        "secure": True,
        "samesite": "Strict",
        "path": "/",
        "max_age": int(max_age),
    }


SEALER = web.AppKey("sealer", Sealer)


def session_of(request: web.Request) -> Session | None:
    """The signed-in person's session, if the request carries a good cookie."""
    if SEALER not in request.app:
        return None
    return request.app[SEALER].open(request.cookies.get(COOKIE), time.time())


def token_of(request: web.Request) -> str | None:
    """The caller's bearer token: the Authorization header, or (a browser's WebSocket,
    which cannot set headers) the subprotocol Kubernetes itself accepts."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and len(auth) < 16384:
        return auth.removeprefix("Bearer ").strip() or None
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(WS_TOKEN_PROTOCOL):
            raw = proto.removeprefix(WS_TOKEN_PROTOCOL)
            try:
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode() or None
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None
