"""The operator's Lambda executor: real boto3 against a local endpoint speaking the
Lambda API on loopback (tests/fake_lambda.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from wallestars_operator.executors import LAMBDA_ASYNC_LIMIT, DispatchError, LambdaExecutor, backoff

from tests.fake_lambda import FakeLambda, serve

SECRET = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"}


async def secret(name: str, key: str) -> str | None:
    assert name == "aws-creds"
    return SECRET.get(key)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeLambda, dict[str, Any]]]:
    f = FakeLambda()
    url, runner = await serve(f)
    cloud = {"provider": "aws-lambda", "timeoutSeconds": 10,
             "aws": {"functionName": "wallestars-agent", "qualifier": "live", "region": "eu-west-1",
                     "endpointURL": url, "credentialsSecretRef": {"name": "aws-creds"}}}  # fmt: skip
    yield f, cloud
    await runner.cleanup()


def executor(slept: list[float]) -> LambdaExecutor:
    async def sleep(s: float) -> None:
        slept.append(s)

    return LambdaExecutor(sleep=sleep)


async def test_invoke_sends_name_qualifier_event_type_and_payload(fake: Any) -> None:
    f, cloud = fake
    body = json.dumps({"task": {"uid": "u1"}, "attempt": 1}).encode()
    await executor([]).invoke(cloud, body, secret)
    [call] = f.calls
    assert (call.function, call.qualifier, call.invocation_type) == (
        "wallestars-agent",
        "live",
        "Event",
    )
    assert call.payload == body


async def test_throttling_and_server_errors_are_retried_with_backoff_and_accepted_once(
    fake: Any,
) -> None:
    f, cloud = fake
    f.script = [429, 500, 502]
    slept: list[float] = []
    await executor(slept).invoke(cloud, b"{}", secret)
    assert [c.status for c in f.calls] == [429, 500, 502, 202]
    assert len(f.accepted) == 1
    assert slept == [backoff(1), backoff(2), backoff(3)] and slept == sorted(slept)


async def test_retries_are_bounded(fake: Any) -> None:
    f, cloud = fake
    f.script = [429] * 10
    with pytest.raises(DispatchError, match="TooManyRequestsException"):
        await executor([]).invoke(cloud, b"{}", secret)
    assert len(f.calls) == 4 and f.accepted == []


async def test_a_missing_function_is_not_retried(fake: Any) -> None:
    f, cloud = fake
    f.script = [404]
    with pytest.raises(DispatchError, match="ResourceNotFoundException"):
        await executor([]).invoke(cloud, b"{}", secret)
    assert len(f.calls) == 1


async def test_an_oversized_payload_never_reaches_the_endpoint(fake: Any) -> None:
    f, cloud = fake
    with pytest.raises(DispatchError, match="over Lambda's 1048576-byte limit"):
        await executor([]).invoke(cloud, b"x" * (LAMBDA_ASYNC_LIMIT + 1), secret)
    assert f.calls == []


async def test_health_is_the_functions_state_and_last_update(fake: Any) -> None:
    f, cloud = fake
    ex = executor([])
    assert await ex.health(cloud, secret) is None
    f.state = {"State": "Pending", "StateReason": "creating"}
    assert await ex.health(cloud, secret) == "the function's state is Pending (creating)"
    f.state = {"State": "Active", "LastUpdateStatus": "Failed", "LastUpdateStatusReason": "bad zip"}
    assert "last update is Failed (bad zip)" in (await ex.health(cloud, secret) or "")


async def test_credentials_secret_must_hold_both_keys(fake: Any) -> None:
    _, cloud = fake

    async def half(name: str, key: str) -> str | None:
        return "AKID" if key == "AWS_ACCESS_KEY_ID" else None

    with pytest.raises(DispatchError, match="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        await LambdaExecutor().invoke(cloud, b"{}", half)
