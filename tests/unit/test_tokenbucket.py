"""The one token-bucket rule shared by the operator's and the webhook service's limits."""

from __future__ import annotations

import pytest
from wallestars_api.tokenbucket import take


def test_a_full_bucket_gives_a_token() -> None:
    assert take(5.0, 0.0, 0.0, rate=1.0, burst=5.0) == (4.0, 0.0)


def test_an_empty_bucket_says_how_long_to_wait_and_takes_nothing() -> None:
    tokens, wait = take(0.25, 0.0, 0.0, rate=2.0, burst=5.0)
    assert tokens == 0.25 and wait == pytest.approx(0.375)


def test_refill_is_capped_at_the_burst() -> None:
    assert take(0.0, 0.0, 1000.0, rate=10.0, burst=3.0) == (2.0, 0.0)


def test_refill_over_time_gives_rate_tokens_per_second() -> None:
    tokens, wait = take(0.0, 10.0, 10.5, rate=4.0, burst=10.0)
    assert (tokens, wait) == (1.0, 0.0)


def test_reservations_queue_callers_in_order_one_wait_each() -> None:
    from wallestars_api.tokenbucket import reserve

    tokens, waits = 2.0, []
    for _ in range(5):  # five callers at the same moment, 2 tokens, 10 a second
        tokens, wait = reserve(tokens, 0.0, 0.0, rate=10.0, burst=2.0)
        waits.append(wait)
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    # A plain take after them waits for theirs first.
    assert take(tokens, 0.0, 0.0, rate=10.0, burst=2.0)[1] == pytest.approx(0.4)
    # Time repays the debt, and the refill is still capped at the burst.
    assert reserve(tokens, 0.0, 100.0, rate=10.0, burst=2.0) == (1.0, 0.0)


async def test_spare_waits_for_a_half_full_bucket_and_takes_nothing() -> None:
    import time

    from wallestars_operator.ratelimit import TokenBucket

    b = TokenBucket(qps=200.0, burst=10)
    for _ in range(10):
        await b.take()
    assert b.tokens < 1.0
    await b.spare()  # notification records wait for what the rest leaves
    level = min(b.burst, b.tokens + (time.monotonic() - b.at) * b.qps)
    assert level >= 5.0
    assert b.tokens < 1.0  # the bucket's count is untouched: the request after takes its own
