"""Why an Agent cannot take tasks (its Ready=False reason), decided without the API."""

from __future__ import annotations

from wallestars_operator.agents import agent_problem


def test_a_browser_agent_may_leave_its_image_to_the_operators_default() -> None:
    assert agent_problem({"spec": {"type": "browser", "browser": {}}}) is None
    assert agent_problem({"spec": {"type": "browser"}}) == "spec.browser is not set"


def test_an_http_agent_needs_its_url() -> None:
    assert agent_problem(
        {"spec": {"type": "cloud", "cloud": {"provider": "http", "http": {}}}}
    ) == ("spec.cloud.http.url is not set")
    ok = {"spec": {"type": "cloud", "cloud": {"provider": "http", "http": {"url": "https://f/"}}}}
    assert agent_problem(ok) is None


def cloud(provider: str, section: str, **conf: str) -> dict[str, object]:
    return {"spec": {"type": "cloud", "cloud": {"provider": provider, section: conf}}}


def test_plain_http_functions_are_refused_unless_the_installation_allows_them() -> None:
    for agent, field in [
        (cloud("http", "http", url="http://fn.example.com/run"), "spec.cloud.http.url"),
        (cloud("http", "http", url="https://f/", healthURL="http://f/h"), "spec.cloud.http.healthURL"),
        (cloud("azure-functions", "azure", functionURL="http://x.azurewebsites.net/api/run"),
         "spec.cloud.azure.functionURL"),
    ]:  # fmt: skip
        why = agent_problem(agent)
        assert why is not None and why.startswith(f"{field} must be an https:// URL"), why
        assert agent_problem(agent, allow_plain_http=True) is None


def test_conditions_name_the_problem_and_paused_is_not_ready() -> None:
    from wallestars_operator.agents import agent_conditions

    conds, takes = agent_conditions([], None, False, None, "t")
    assert takes and {c["type"]: (c["status"], c["reason"]) for c in conds} == {
        "Ready": ("True", "Ready"), "Healthy": ("True", "Healthy")}  # fmt: skip
    conds, takes = agent_conditions(
        [], None, False, ("SecretRefused", "Secret n/s does not ..."), "t"
    )
    assert not takes
    assert {c["type"]: (c["status"], c["reason"], c["message"]) for c in conds} == {
        "Ready": ("False", "SecretRefused", "Secret n/s does not ..."),
        "Healthy": ("False", "SecretRefused", "Secret n/s does not ...")}  # fmt: skip
    conds, takes = agent_conditions([], None, True, None, "t")
    assert not takes and conds[0]["reason"] == "Paused" and conds[1]["status"] == "True"
    conds, takes = agent_conditions([], "spec.browser is not set", False, None, "t")
    assert not takes and conds[0]["reason"] == "InvalidConfiguration"


def test_statistics_count_partial_success_as_success() -> None:
    from wallestars_operator.agents import statistics

    done = [{"phase": p, "completionTime": f"2026-12-02T10:00:0{i}Z", "durationSeconds": i}
            for i, p in enumerate(["Succeeded", "PartiallySucceeded", "Failed", "TimedOut"])]  # fmt: skip
    assert statistics(done) == {"successRate": 0.5, "meanDurationSeconds": 1.5}
    assert statistics([]) == {}


def test_a_plain_http_lambda_endpoint_is_refused_too() -> None:
    agent = cloud("aws-lambda", "aws", functionName="f", endpointURL="http://lambda.local:9000")
    why = agent_problem(agent)
    assert why and why.startswith("spec.cloud.aws.endpointURL must be an https:// URL")
    assert agent_problem(agent, allow_plain_http=True) is None
    assert agent_problem(cloud("aws-lambda", "aws", functionName="f")) is None
