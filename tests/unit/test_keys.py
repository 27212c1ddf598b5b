"""HKDF and per-attempt keys."""

from __future__ import annotations

import pytest
from wallestars_sdk.keys import (
    KeyError_,
    decode_key,
    derive_attempt_key,
    encode_key,
    hkdf_sha256,
    parse_master_keys,
)


def test_hkdf_rfc5869_case_1() -> None:
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_attempt_keys_differ_by_task_attempt_and_master() -> None:
    m1, m2 = b"1" * 32, b"2" * 32
    keys = {
        derive_attempt_key(m1, "uid-a", 1),
        derive_attempt_key(m1, "uid-a", 2),
        derive_attempt_key(m1, "uid-b", 1),
        derive_attempt_key(m2, "uid-a", 1),
    }
    assert len(keys) == 4
    assert derive_attempt_key(m1, "uid-a", 1) == derive_attempt_key(m1, "uid-a", 1)
    with pytest.raises(KeyError_):
        derive_attempt_key(m1, "uid-a", 0)


def test_key_text_forms() -> None:
    key = b"\x01" * 32
    assert decode_key(encode_key(key)) == key
    assert decode_key(encode_key(key).removeprefix("whsec_")) == key
    with pytest.raises(KeyError_):
        decode_key("whsec_short")
    assert parse_master_keys(f"# current\n{encode_key(key)}\n\n{encode_key(b'2' * 32)}\n") == [
        key,
        b"2" * 32,
    ]
    with pytest.raises(KeyError_):
        parse_master_keys("# nothing\n")
