"""Google ID tokens: which service-account keys are used, and when a token is reused."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from wallestars_operator import idtokens
from wallestars_operator.idtokens import GOOGLE_TOKEN_URI, IdTokenError, IdTokens, key_problem

KEY = {"type": "service_account", "client_email": "op@p.iam.gserviceaccount.com",
       "private_key": "-----BEGIN PRIVATE KEY-----…", "token_uri": GOOGLE_TOKEN_URI}  # fmt: skip


def test_a_complete_key_for_googles_endpoint_is_used() -> None:
    assert key_problem(KEY, allow_any_token_uri=False) is None


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (None, "not a Google service-account key"),
        (["a"], "not a Google service-account key"),
        (KEY | {"type": "authorized_user"}, "not a Google service-account key"),
        ({k: v for k, v in KEY.items() if k != "private_key"}, "no private_key"),
        (KEY | {"client_email": ""}, "no client_email"),
    ],
)
def test_an_unusable_key_says_what_is_wrong(info: Any, why: str) -> None:
    assert why in (key_problem(info, allow_any_token_uri=True) or "")


def test_a_key_is_sent_only_to_googles_token_endpoint() -> None:
    """The key's token_uri receives a signed assertion: an address of the key's author is
    refused unless the installation allows any (the local tests' development setting)."""
    hostile = KEY | {"token_uri": "http://127.0.0.1:9/token"}
    why = key_problem(hostile, allow_any_token_uri=False)
    assert why is not None and "127.0.0.1:9" in why and GOOGLE_TOKEN_URI in why
    assert key_problem(hostile, allow_any_token_uri=True) is None


def test_a_token_is_reused_until_five_minutes_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    expiry = [time.time() + 3600]

    def mint(info: dict[str, Any], audience: str) -> tuple[str, float]:
        calls.append(audience)
        return f"token-{len(calls)}", expiry[0]

    monkeypatch.setattr(idtokens, "mint", mint)
    tokens = IdTokens()
    key = json.dumps(KEY)
    assert asyncio.run(tokens.get(key, "https://fn")) == "token-1"
    assert asyncio.run(tokens.get(key, "https://fn")) == "token-1"
    assert asyncio.run(tokens.get(key, "https://other")) == "token-2"  # per audience
    expiry[0] = time.time() + 200  # the next one is near its end as soon as it is minted
    tokens.cache.clear()
    assert asyncio.run(tokens.get(key, "https://fn")) == "token-3"
    assert asyncio.run(tokens.get(key, "https://fn")) == "token-4"
    assert calls == ["https://fn", "https://other", "https://fn", "https://fn"]


def test_a_refused_key_mints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idtokens, "mint", lambda *a: pytest.fail("minted"))
    with pytest.raises(IdTokenError, match="not Google's"):
        asyncio.run(IdTokens().get(json.dumps(KEY | {"token_uri": "https://x/t"}), "https://fn"))
    with pytest.raises(IdTokenError, match="not a Google service-account key"):
        asyncio.run(IdTokens().get("not json", "https://fn"))


def test_tasks_dispatched_together_share_one_token(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def mint(info: dict[str, Any], audience: str) -> tuple[str, float]:
        time.sleep(0.05)  # google-auth's round trip, in a worker thread
        calls.append(audience)
        return "token", time.time() + 3600

    monkeypatch.setattr(idtokens, "mint", mint)
    tokens = IdTokens()

    async def ten() -> list[str]:
        return await asyncio.gather(*(tokens.get(json.dumps(KEY), "https://fn") for _ in range(10)))

    assert asyncio.run(ten()) == ["token"] * 10
    assert calls == ["https://fn"]
