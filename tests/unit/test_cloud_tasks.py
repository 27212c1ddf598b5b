"""Pure parts of the cloud agents' built-in task types."""

from __future__ import annotations

import pytest
from wallestars_cloud.handler import Failed
from wallestars_cloud.tasks import Assertion, check, json_path, requests_of

DOC = {"items": [{"id": 1, "tags": ["a", "b"]}], "ok": True, "n": None}


@pytest.mark.parametrize(
    ("path", "expected"),
    [("$.items[0].id", (True, 1)), ("items[0].tags[1]", (True, "b")), ("$.ok", (True, True)),
     ("$.n", (True, None)), ("$.items[1].id", (False, None)), ("$.missing.x", (False, None)),
     ("$.items.id", (False, None)), ("$", (True, DOC))],
)  # fmt: skip
def test_json_paths(path: str, expected: tuple[bool, object]) -> None:
    assert json_path(DOC, path) == expected


def verdict(a: dict[str, object], status: int = 200, latency: float = 50.0) -> tuple[bool, object]:
    v = check(
        Assertion.model_validate(a), status, {"content-type": "application/json"}, DOC, latency
    )
    return v["passed"], v["actual"]


def test_assertions() -> None:
    assert verdict({"status": 200}) == (True, 200)
    assert verdict({"status": 201}) == (False, 200)
    assert verdict({"latencyMs": 100}, latency=100.0) == (True, 100.0)
    assert verdict({"latencyMs": 100}, latency=100.5) == (False, 100.5)
    assert verdict({"header": "Content-Type", "contains": "json"}) == (True, "application/json")
    assert verdict({"header": "X-Missing"}) == (False, None)
    assert verdict({"header": "X-Missing", "exists": False}) == (True, None)
    assert verdict({"jsonPath": "$.items[0].id", "equals": "1"}) == (True, 1)
    assert verdict({"jsonPath": "$.items[0].id", "equals": "2"}) == (False, 1)
    assert verdict({"jsonPath": "$.ok", "equals": "true"}) == (True, True)
    assert verdict({"jsonPath": "$.items[0].tags", "contains": '"b"'}) == (True, ["a", "b"])


def test_one_request_or_many_and_bad_input_is_a_user_error() -> None:
    [one] = requests_of({"url": "http://a/", "expectStatus": 204, "assertions": [{"latencyMs": 9}]})
    assert (one.url, one.method, one.expectStatus, len(one.assertions)) == (
        "http://a/",
        "GET",
        204,
        1,
    )
    many = requests_of({"requests": [{"url": "http://a/"}, {"url": "http://b/", "method": "POST"}]})
    assert [r.method for r in many] == ["GET", "POST"]
    with pytest.raises(Failed) as e:
        requests_of({"requests": [{"method": "GET"}]})
    assert e.value.code == "UserError" and "url" in e.value.message
