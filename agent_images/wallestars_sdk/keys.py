"""Per-attempt callback keys, derived from a master secret (HKDF, RFC 5869).

The operator derives the key of an attempt and hands it to that attempt only; the
webhook service derives it again from the task UID and attempt number, so it needs no
lookup. A key speaks for exactly one (task UID, attempt).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence

KEY_PREFIX = "whsec_"
SALT = b"wallestars-agents/callback-key/v1"


class KeyError_(ValueError):
    """A key or master secret that cannot be used."""


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract, then expand to ``length`` bytes."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF length out of range")
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range((length + 31) // 32):
        block = hmac.new(prk, block + info + bytes([i + 1]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


@functools.lru_cache(maxsize=65536)
def derive_attempt_key(master: bytes, task_uid: str, attempt: int) -> bytes:
    """The 32-byte key of one attempt of one task (cached: a task's callbacks reuse it)."""
    if attempt < 1:
        raise KeyError_("attempt numbers start at 1")
    info = f"task={task_uid};attempt={attempt}".encode()
    return hkdf_sha256(master, SALT, info)


def encode_key(key: bytes) -> str:
    """The Standard Webhooks form of a key: ``whsec_`` + base64."""
    return KEY_PREFIX + base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """A key in ``whsec_<base64>`` form (the prefix is optional, as in the reference libraries)."""
    text = text.strip()
    raw = text.removeprefix(KEY_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (ValueError, base64.binascii.Error) as e:  # type: ignore[attr-defined]
        raise KeyError_("a key must be base64 (optionally prefixed whsec_)") from e
    if len(key) < 16:
        raise KeyError_("a key must be at least 16 bytes")
    return key


def parse_master_keys(text: str) -> list[bytes]:
    """Master secrets, one per line (blank lines and # comments ignored).

    The first signs new attempts; every one is accepted when verifying, so a master can
    be rotated by adding the new one first and removing the old one after the longest
    attempt has ended.
    """
    keys = [
        decode_key(line)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise KeyError_("no master key given")
    return keys


def attempt_keys(masters: Sequence[bytes], task_uid: str, attempt: int) -> list[bytes]:
    """Every key an attempt's callbacks may be signed with, one per master (rotation)."""
    return [derive_attempt_key(m, task_uid, attempt) for m in masters]
