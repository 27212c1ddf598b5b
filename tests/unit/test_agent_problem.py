"""Why an Agent cannot take tasks (its Ready=False reason), decided without the API."""

from __future__ import annotations

from wallestars_operator.reconcile import agent_problem


def test_a_browser_agent_may_leave_its_image_to_the_operators_default() -> None:
    assert agent_problem({"spec": {"type": "browser", "browser": {}}}) is None
    assert agent_problem({"spec": {"type": "browser"}}) == "spec.browser is not set"


def test_an_http_agent_needs_its_url() -> None:
    assert agent_problem(
        {"spec": {"type": "cloud", "cloud": {"provider": "http", "http": {}}}}
    ) == ("spec.cloud.http.url is not set")
    ok = {"spec": {"type": "cloud", "cloud": {"provider": "http", "http": {"url": "https://f/"}}}}
    assert agent_problem(ok) is None
