"""Pure decisions of the cloud executors."""

from __future__ import annotations

import pytest
from wallestars_operator.executors import (
    DispatchError,
    Executors,
    backoff,
    lambda_problem,
    retryable_aws_error,
)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_only_throttling_and_server_errors_are_retried() -> None:
    assert retryable_aws_error(429, "TooManyRequestsException")
    assert retryable_aws_error(500, "ServiceException") and retryable_aws_error(503, "")
    assert retryable_aws_error(400, "ThrottlingException")
    assert not retryable_aws_error(404, "ResourceNotFoundException")
    assert not retryable_aws_error(413, "RequestTooLargeException")
    assert not retryable_aws_error(403, "AccessDeniedException")


def test_lambda_health_from_get_function() -> None:
    assert lambda_problem({"State": "Active", "LastUpdateStatus": "Successful"}) is None
    assert lambda_problem({"State": "Active"}) is None
    assert (
        lambda_problem({"State": "Inactive", "StateReason": "idle"})
        == "the function's state is Inactive (idle)"
    )
    assert "InProgress" in (
        lambda_problem({"State": "Active", "LastUpdateStatus": "InProgress"}) or ""
    )


def test_each_provider_has_its_executor() -> None:
    ex = Executors()
    assert (
        ex.of("http") is ex.http
        and ex.of("azure-functions") is ex.azure
        and ex.of("aws-lambda") is ex.aws
    )
    assert ex.azure.key_header == "x-functions-key" and ex.azure.url_field == "functionURL"
    with pytest.raises(DispatchError, match="unknown cloud provider 'gcp'"):
        ex.of("gcp")


def test_plain_http_function_urls_need_the_development_setting() -> None:
    from wallestars_operator.executors import plain_http_refused

    assert plain_http_refused("https://fn.example.com/run", "spec.cloud.http.url") is None
    assert plain_http_refused("HTTPS://fn.example.com/run", "x") is None
    why = plain_http_refused("http://fn.example.com/run", "spec.cloud.http.url")
    assert why and why.startswith("spec.cloud.http.url must be an https:// URL")
    assert "WALLESTARS_INSECURE_DEVELOPMENT_ALLOW_PLAIN_HTTP" in why
    assert Executors().http.refused("http://x/", "url") is not None
    assert Executors(allow_plain_http=True).http.refused("http://x/", "url") is None
