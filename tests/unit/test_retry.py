"""The shared retry policy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wallestars_api.retry import RetryPolicy, decide


def test_exponential_then_capped() -> None:
    p = RetryPolicy(limit=5, backoff_seconds=10, factor=2, max_backoff_seconds=60, jitter=0)
    assert [p.backoff(n, 0.0) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_limit_counts_retries_after_the_first_attempt() -> None:
    p = RetryPolicy(limit=2)
    assert decide(p, 1, True, 0.5).retry
    assert decide(p, 2, True, 0.5).retry
    d = decide(p, 3, True, 0.5)
    assert not d.retry and d.reason == "RetriesExhausted"
    assert decide(RetryPolicy(limit=0), 1, True).reason == "RetriesExhausted"


def test_non_retryable_is_never_retried() -> None:
    d = decide(RetryPolicy(limit=10), 1, False, 0.0)
    assert not d.retry and d.reason == "NonRetryableError"


@given(
    st.integers(1, 20), st.floats(0, 1, exclude_max=True), st.floats(0, 3600), st.floats(1, 10),
    st.floats(0, 86400), st.floats(0, 1),
)  # fmt: skip
def test_jitter_stays_within_bounds(
    n: int, r: float, base: float, factor: float, cap: float, jitter: float
) -> None:
    p = RetryPolicy(
        limit=20, backoff_seconds=base, factor=factor, max_backoff_seconds=cap, jitter=jitter
    )
    d = p.backoff(n, r)
    full = min(base * factor ** (n - 1), cap)
    assert full * (1 - jitter) - 1e-9 <= d <= full + 1e-9


def test_from_spec_defaults() -> None:
    assert RetryPolicy.from_spec(None) == RetryPolicy()
    assert RetryPolicy.from_spec({"limit": 0}).limit == 0


def test_retry_after_is_read_for_429_and_503_only() -> None:
    from wallestars_api.retry import retry_after_seconds

    assert retry_after_seconds(429, "5") == 5
    assert retry_after_seconds(503, "2") == 2
    assert retry_after_seconds(429, None) == 1  # client-go's reading of a bare 429
    assert retry_after_seconds(503, None) is None
    assert retry_after_seconds(500, "5") is None  # a 500 asks for no wait
    assert retry_after_seconds(429, "86400") == 60  # capped
    assert retry_after_seconds(429, "Wed, 21 Oct 2026 07:28:00 GMT") == 1
    assert retry_after_seconds(429, "-3") == 0
