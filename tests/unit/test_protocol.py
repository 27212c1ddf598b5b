"""Callback bodies: strict JSON and typed fields, with errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wallestars_sdk.protocol import INLINE_RESULT_LIMIT, BodyError, PlanContext, parse_callback

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


def test_a_callback_in_the_plans_format_reads_as_ours() -> None:
    """What an agent written from the integration plan sends (x-agent-* scheme): no task
    or attempt (the URL has them), a millisecond timestamp and duration, logs as lines."""
    plan = {"taskId": "u-1", "agentId": "js-agent", "status": "failure",
            "timestamp": 1_796_300_000_123, "duration": 2_500,
            "results": {"data": {"ok": False}, "logs": ["start", "loading page", "boom"]},
            "error": {"code": "PageCrashed", "message": "boom", "stack": "Error: boom\n    at x.js:1"}}  # fmt: skip
    cb = parse_callback(json.dumps(plan).encode(), PlanContext(3, "team", "shot"))
    assert (cb.task.namespace, cb.task.name, cb.attempt) == ("team", "shot", 3)
    assert cb.duration == 2.5
    assert cb.timestamp == "2026-12-03T12:13:20.123Z"
    assert cb.results is not None and cb.results.logs == "start\nloading page\nboom"
    assert cb.error is not None and cb.error.stack == "Error: boom\n    at x.js:1"
    # The body's own task and attempt win; a mismatch is then the service's to refuse.
    own = {**plan, "task": {"namespace": "a", "name": "b"}, "attempt": 1}
    cb = parse_callback(json.dumps(own).encode(), PlanContext(3, "team", "shot"))
    assert (cb.task.name, cb.attempt) == ("b", 1)
    # Without the plan's scheme nothing is reinterpreted: a bare body is refused, naming why.
    with pytest.raises(BodyError, match="task"):
        parse_callback(json.dumps(plan).encode())


def test_the_plans_format_is_still_checked_field_by_field() -> None:
    bad = {"taskId": "u-1", "agentId": "a", "status": "success", "results": {"logs": ["ok", 3]}}
    with pytest.raises(BodyError, match=r"results\.logs"):
        parse_callback(json.dumps(bad).encode(), PlanContext(1, "n", "t"))
    no_place = {"taskId": "u-1", "agentId": "a", "status": "success"}
    with pytest.raises(BodyError, match="task"):
        parse_callback(json.dumps(no_place).encode(), PlanContext(1, None, None))
