"""The application API's pure parts: the plan's request to an AgentTask, refusals in
the request's terms, views, list selectors, and where a caller's token comes from."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from wallestars_console import tasks as t
from wallestars_console.sessions import token_of


def test_the_plans_request_becomes_an_agenttask() -> None:
    m = t.to_task({"type": "screenshot", "payload": {"url": "https://x/"}, "priority": "high",
                   "agentType": "browser", "labels": {"team": "shop"}})  # fmt: skip
    assert m["metadata"] == {"generateName": "screenshot-", "labels": {"team": "shop"}}
    assert m["spec"] == {"type": "screenshot", "payload": {"url": "https://x/"}, "priority": 8,
                         "agentSelector": {"type": "browser", "capabilities": ["screenshot"]}}  # fmt: skip
    assert t.to_task({"type": "api-test", "name": "n1"})["spec"]["agentSelector"]["type"] == "cloud"
    assert t.to_task({"type": "custom", "agentRef": "fn"})["spec"]["agentRef"] == "fn"
    assert t.to_task({"type": "echo", "priority": 3})["spec"]["priority"] == 3


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "screenshot", "colour": 1}, "colour"), ({}, "type"), ({"type": ""}, "type"),
    ({"type": "custom"}, "agentType"), ({"type": "echo", "agentRef": "a", "agentType": "cloud"}, "agentRef"),
    ({"type": "echo", "priority": "urgent"}, "priority"), ({"type": "echo", "name": "Not_A_Name"}, "name"),
    ({"type": "echo", "payload": []}, "payload"), ({"type": "echo", "labels": "x"}, "labels"),
])  # fmt: skip
def test_a_request_that_cannot_be_a_task_says_which_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(t.BadRequest) as e:
        t.to_task(body)
    assert e.value.field == field
    with pytest.raises(t.BadRequest):
        t.to_task([1])


def test_the_api_servers_refusal_is_said_in_the_requests_terms() -> None:
    out = t.refusal(422, "Invalid", "AgentTask is invalid", [
        {"field": "spec.payload.url", "reason": "FieldValueRequired", "message": "required"},
        {"field": "spec.priority", "reason": "FieldValueInvalid", "message": "should be <= 10"},
        {"field": "metadata.name", "reason": "FieldValueInvalid", "message": "bad"},
        {"field": "spec.agentSelector.capabilities[0]", "reason": "x", "message": "y"}])  # fmt: skip
    assert [f["field"] for f in out["error"]["fields"]] == [
        "payload.url",
        "priority",
        "name",
        "capabilities[0]",
    ]
    assert out["error"]["code"] == 422


def test_views_and_selectors() -> None:
    task = {"metadata": {"uid": "u", "namespace": "ns", "name": "t", "creationTimestamp": "c"},
            "spec": {"type": "echo", "agentRef": "fn"},
            "status": {"phase": "Succeeded", "progress": 100, "agent": "fn", "attempt": 1,
                       "completionTime": "d", "result": {"data": {"a": 1}}}}  # fmt: skip
    v = t.view(task)
    assert (v["id"], v["status"], v["completedAt"], v["results"]) == (
        "u",
        "Succeeded",
        "d",
        {"data": {"a": 1}},
    )
    assert "startedAt" not in v and "error" not in v
    agent = {"metadata": {"name": "a"}, "spec": {"type": "cloud", "cloud": {"provider": "aws"}, "concurrency": 4},
             "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Unhealthy", "message": "m"}]}}  # fmt: skip
    av = t.agent_view(agent)
    assert av["provider"] == "aws" and av["slots"] == 4 and av["ready"]["reason"] == "Unhealthy"
    assert t.selectors({"phase": "Running", "type": "echo", "limit": "10", "continue": "abc"}) == {
        "fieldSelector": "status.phase=Running,spec.type=echo", "limit": "10", "continue": "abc"}  # fmt: skip
    for bad in ({"phase": "Running,spec.type=x"}, {"limit": "0"}, {"limit": "x"}, {"agent": "a b"}):
        with pytest.raises(t.BadRequest):
            t.selectors(bad)


def test_a_token_comes_from_the_header_or_the_kubernetes_websocket_subprotocol() -> None:
    assert (
        token_of(make_mocked_request("GET", "/", headers={"Authorization": "Bearer abc"})) == "abc"
    )
    proto = "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(
        b"tok.en"
    ).decode().rstrip("=")
    req = make_mocked_request(
        "GET", "/", headers={"Sec-WebSocket-Protocol": f"wallestars.v1, {proto}"}
    )
    assert token_of(req) == "tok.en"
    assert token_of(make_mocked_request("GET", "/")) is None
    assert token_of(make_mocked_request("GET", "/", headers={"Authorization": "Basic x"})) is None
    bad = make_mocked_request(
        "GET", "/", headers={"Sec-WebSocket-Protocol": "base64url.bearer.authorization.k8s.io.!!"}
    )
    assert token_of(bad) is None
