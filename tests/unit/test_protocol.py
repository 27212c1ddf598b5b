"""Callback bodies: strict JSON and typed fields, with errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wallestars_sdk.protocol import INLINE_RESULT_LIMIT, BodyError, parse_callback

GOOD: dict[str, Any] = {
    "taskId": "uid-1",
    "agentId": "a",
    "task": {"namespace": "ns", "name": "t"},
    "attempt": 1,
    "status": "success",
    "results": {"data": {"title": "x"}, "metrics": {"lcp": 1.5, "n": 2}},
}


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_good_body_parses() -> None:
    cb = parse_callback(raw(GOOD))
    assert cb.results is not None and cb.results.metrics == {"lcp": 1.5, "n": 2.0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"x": NaN}', "NaN is not JSON"),
        (b'{"x": Infinity}', "Infinity is not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 40 + b"]" * 40, "nested deeper"),
        (b"[" * 100000, "nested deeper"),
        (b"{", "not JSON"),
        (raw({**GOOD, "attempt": "1"}), "attempt"),
        (raw({**GOOD, "attempt": 0}), "attempt"),
        (raw({**GOOD, "status": "done"}), "status"),
        (raw({**GOOD, "progress": 101}), "progress"),
        (raw({**GOOD, "extra": 1}), "extra"),
        (raw({**GOOD, "task": {"namespace": "NS!", "name": "t"}}), "task.namespace"),
        (raw({**GOOD, "status": "failure"}), "error: required"),
        (raw({**GOOD, "results": {"data": {"blob": "x" * INLINE_RESULT_LIMIT}}}), "inline limit"),
        (raw({**GOOD, "results": {"metrics": {"x": "fast"}}}), "results.metrics.x"),
        (b'{"taskId": "u", "duration": 1e999}', "out of range"),
    ],
)
def test_bad_bodies_are_refused_with_where(body: bytes, message: str) -> None:
    with pytest.raises(BodyError, match=message.replace("(", r"\(")):
        parse_callback(body)
