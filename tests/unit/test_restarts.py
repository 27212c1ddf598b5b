"""When the operator runs kopf again after kopf stopped on an error (restarts.py)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from kopf._cogs.clients import errors as kopf_errors
from wallestars_operator.restarts import RestartPolicy, after_failure, transient

P = RestartPolicy(first_delay=1, max_delay=30, healthy_after=60, give_up_after=10)


def test_delays_double_up_to_the_cap_while_runs_keep_failing_quickly() -> None:
    failed, delays = 0, []
    for _ in range(9):
        failed, delay = after_failure(P, failed, ran_for=2)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_gives_up_after_ten_quick_failures_in_a_row() -> None:
    assert after_failure(P, 9, ran_for=2) == (10, None)


def test_a_long_healthy_run_starts_the_backoff_afresh() -> None:
    assert after_failure(P, 9, ran_for=61) == (1, 1)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("reset"),
        TimeoutError(),
        ConnectionResetError(),
        json.JSONDecodeError("Expecting ':' delimiter", "{", 1),  # a cut watch line (kopf#839)
        kopf_errors.APIServerError("boom", status=503, headers={}),
        kopf_errors.APITooManyRequestsError("slow down", status=429, headers={}),
    ],
)
def test_errors_of_the_api_server_or_network_are_transient(exc: BaseException) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        kopf_errors.APIForbiddenError("no RBAC", status=403, headers={}),
        kopf_errors.APIUnauthorizedError("bad token", status=401, headers={}),
        ValueError("a bad setting"),
        KeyError("a bug"),
    ],
)
def test_errors_that_another_run_would_repeat_are_not(exc: BaseException) -> None:
    assert not transient(exc)
