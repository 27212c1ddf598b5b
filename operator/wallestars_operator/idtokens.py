"""Google ID tokens for functions behind Google's IAM (Cloud Run, Cloud Functions).

An `http` Agent with `spec.cloud.http.googleIdToken` is invoked with
`Authorization: Bearer <ID token>`: a token for the audience (the function's URL unless
set), minted by google-auth from a service-account key kept in an opted-in Secret, and
reused until five minutes before it expires (they live an hour). The key's `token_uri`
is where the key is sent to be exchanged, so it is checked like every address our code
connects to on a user's behalf: Google's token endpoint only (any address only under
the installation's development setting, for the local tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any


class IdTokenError(Exception):
    """No ID token: the key is unusable or the token endpoint said no."""


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
REFRESH_MARGIN_SECONDS = 300


def key_problem(info: Any, allow_any_token_uri: bool) -> str | None:
    """Why a service-account key cannot be used, or None (pure)."""
    if not isinstance(info, dict) or info.get("type") != "service_account":
        return "the Secret's key is not a Google service-account key (type service_account)"
    for f in ("client_email", "private_key", "token_uri"):
        if not info.get(f):
            return f"the service-account key has no {f}"
    if not allow_any_token_uri and info["token_uri"] != GOOGLE_TOKEN_URI:
        return (f"the service-account key's token_uri {info['token_uri']!r} is not Google's "
                f"({GOOGLE_TOKEN_URI}); the key would be sent there")  # fmt: skip
    return None


def mint(info: dict[str, Any], audience: str) -> tuple[str, float]:
    """A fresh ID token and when it expires (epoch seconds): google-auth, blocking."""
    import urllib3
    from google.auth.exceptions import GoogleAuthError
    from google.auth.transport.urllib3 import Request
    from google.oauth2 import service_account

    creds = service_account.IDTokenCredentials.from_service_account_info(
        info, target_audience=audience
    )
    try:
        creds.refresh(Request(urllib3.PoolManager(timeout=10.0, retries=False)))
    except (GoogleAuthError, urllib3.exceptions.HTTPError) as e:
        raise IdTokenError(f"no Google ID token for {audience}: {e}") from e
    expiry = creds.expiry.replace(tzinfo=UTC).timestamp() if creds.expiry else time.time() + 600
    return str(creds.token), expiry


@dataclass
class IdTokens:
    """ID tokens by (key, audience), minted once and reused until near their expiry."""

    allow_any_token_uri: bool = False
    cache: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    # One mint at a time per (key, audience): tasks dispatched together share one token.
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def fresh(self, k: tuple[str, str]) -> str | None:
        hit = self.cache.get(k)
        if hit is not None and hit[1] - REFRESH_MARGIN_SECONDS > time.time():
            return hit[0]
        return None

    async def get(self, key_json: str, audience: str) -> str:
        k = (hashlib.sha256(key_json.encode()).hexdigest(), audience)
        if hit := self.fresh(k):
            return hit
        async with self.locks.setdefault(k, asyncio.Lock()):
            if hit := self.fresh(k):
                return hit
            try:
                info = json.loads(key_json)
            except ValueError:
                info = None
            if why := key_problem(info, self.allow_any_token_uri):
                raise IdTokenError(why)
            token, expiry = await asyncio.to_thread(mint, info, audience)
            self.cache[k] = (token, expiry)
            return token
