"""Signatures: published vectors, strict header parsing, rotation, the seed scheme."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

import pytest
from wallestars_sdk.keys import decode_key
from wallestars_sdk.signing import SignatureError, sign, sign_headers, sign_seed, verify

NOW = 1_700_000_000
KEY = b"k" * 32
BODY = b'{"a":1}'


def getall(headers: Mapping[str, str | list[str]]) -> Callable[[str], list[str]]:
    lower = {k.lower(): v for k, v in headers.items()}

    def f(name: str) -> list[str]:
        v = lower.get(name.lower())
        if v is None:
            return []
        return v if isinstance(v, list) else [v]

    return f


def test_standard_webhooks_published_vector() -> None:
    key = decode_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_github_documented_example() -> None:
    # GitHub's webhook docs: secret "It's a Secret to Everybody", payload "Hello, World!".
    mac = hmac.new(b"It's a Secret to Everybody", b"Hello, World!", hashlib.sha256).hexdigest()
    assert mac == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    # Our seed-scheme signer is the same HMAC-SHA256 hex over timestamp + body.
    assert (
        sign_seed(b"It's a Secret to Everybody", 0, b"Hello, World!")
        == hmac.new(b"It's a Secret to Everybody", b"0Hello, World!", hashlib.sha256).hexdigest()
    )


def test_round_trip_and_rotation() -> None:
    other = b"o" * 32
    h = sign_headers([other, KEY], "msg_1", NOW, BODY)
    assert len(h["webhook-signature"].split(" ")) == 2
    v = verify([KEY], getall(h), BODY, NOW)
    assert (v.webhook_id, v.timestamp, v.scheme) == ("msg_1", NOW, "standard")
    with pytest.raises(SignatureError, match="no signature matches"):
        verify([b"x" * 32], getall(h), BODY, NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": "a.b"}, "bad-id"),
        ({"webhook-id": ""}, "bad-id"),
        ({"webhook-timestamp": "1700000000.5"}, "bad-timestamp"),
        ({"webhook-timestamp": "-1700000000"}, "bad-timestamp"),
        ({"webhook-timestamp": " 1700000000"}, "bad-timestamp"),
        ({"webhook-timestamp": str(NOW - 301)}, "stale-timestamp"),
        ({"webhook-timestamp": str(NOW + 301)}, "stale-timestamp"),
        ({"webhook-signature": "v1,not-base64!"}, "bad-signature-header"),
        ({"webhook-signature": "v1,AAAA"}, "bad-signature-header"),
        ({"webhook-signature": "garbage"}, "bad-signature-header"),
        ({"webhook-signature": "v2,AAAA"}, "bad-signature-header"),
        ({"webhook-signature": ""}, "bad-signature-header"),
        ({"webhook-id": ["msg_1", "msg_1"]}, "duplicate-header"),
        ({"webhook-signature": None}, "missing-header"),
    ],
)
def test_strict_headers(change: dict[str, str | list[str] | None], reason: str) -> None:
    h: dict[str, str | list[str]] = dict(sign_headers([KEY], "msg_1", NOW, BODY))
    for k, v in change.items():
        if v is None:
            h.pop(k)
        else:
            h[k] = v
    with pytest.raises(SignatureError) as e:
        verify([KEY], getall(h), BODY, NOW)
    assert e.value.reason == reason


def test_tolerance_edges() -> None:
    for ts, ok in ((NOW - 300, True), (NOW + 300, True), (NOW - 301, False)):
        h = sign_headers([KEY], "msg_1", ts, BODY)
        if ok:
            verify([KEY], getall(h), BODY, NOW)
        else:
            with pytest.raises(SignatureError):
                verify([KEY], getall(h), BODY, NOW)


def test_unknown_versions_are_skipped_beside_a_good_v1() -> None:
    h = sign_headers([KEY], "msg_1", NOW, BODY)
    h["webhook-signature"] = "v1a,AAAA " + h["webhook-signature"]
    verify([KEY], getall(h), BODY, NOW)


def test_a_flipped_bit_fails() -> None:
    h = sign_headers([KEY], "msg_1", NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify([KEY], getall(h), b'{"a":0}', NOW)


def test_seed_scheme() -> None:
    h = {
        "x-agent-id": "a1",
        "x-agent-timestamp": str(NOW),
        "x-agent-signature": sign_seed(KEY, NOW, BODY),
    }
    v = verify([KEY], getall(h), BODY, NOW)
    assert v.scheme == "seed" and v.webhook_id.startswith("seed-")
    h["x-agent-signature"] = "0" * 64
    with pytest.raises(SignatureError):
        verify([KEY], getall(h), BODY, NOW)
    with pytest.raises(SignatureError) as e:
        verify([KEY], getall({}), BODY, NOW)
    assert e.value.reason == "missing-header"


def test_the_plans_millisecond_timestamp_is_accepted_in_its_own_scheme_only() -> None:
    ms = NOW * 1000 + 123  # JavaScript's Date.now(), signed as sent
    h = {"x-agent-id": "a1", "x-agent-timestamp": str(ms),
         "x-agent-signature": _seed_sig(KEY, str(ms), BODY)}  # fmt: skip
    v = verify([KEY], getall(h), BODY, NOW)
    assert v.scheme == "seed" and v.timestamp == NOW
    stale = {**h, "x-agent-timestamp": str(ms - 301_000),
             "x-agent-signature": _seed_sig(KEY, str(ms - 301_000), BODY)}  # fmt: skip
    with pytest.raises(SignatureError, match="more than 300s"):
        verify([KEY], getall(stale), BODY, NOW)
    # Standard Webhooks stays whole seconds: milliseconds there are far in the future.
    std = sign_headers([KEY], "msg_1", NOW, BODY)
    std["webhook-timestamp"] = str(ms)
    with pytest.raises(SignatureError):
        verify([KEY], getall(std), BODY, NOW)


def _seed_sig(key: bytes, ts_text: str, body: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(key, ts_text.encode() + body, hashlib.sha256).hexdigest()
