"""memory.Trimmer: trims only after enough churn and at most once per interval."""

from __future__ import annotations

from wallestars_operator.memory import Trimmer


def counting_trimmer(interval: float = 10.0, churn: int = 500) -> tuple[Trimmer, list[int]]:
    t = Trimmer(interval, churn)
    calls: list[int] = []

    def trim() -> int:
        calls.append(1)
        return 1

    t.trim = trim
    t.last = 0.0
    return t, calls


def test_no_trim_before_the_interval_even_with_churn() -> None:
    t, calls = counting_trimmer()
    assert not t.maybe(10_000, now=5.0)
    assert calls == []


def test_no_trim_without_churn() -> None:
    t, calls = counting_trimmer()
    assert not t.maybe(499, now=60.0)
    assert calls == []


def test_trims_once_per_interval_after_churn() -> None:
    t, calls = counting_trimmer()
    assert t.maybe(600, now=11.0)
    assert not t.maybe(5_000, now=15.0)  # within the interval of the last trim
    assert t.maybe(5_000, now=21.5)
    assert len(calls) == 2 and t.trims == 2


def test_churn_counts_from_the_last_trim() -> None:
    t, calls = counting_trimmer()
    assert t.maybe(600, now=11.0)
    assert not t.maybe(1_000, now=30.0)  # only 400 new events since
    assert t.maybe(1_100, now=31.0)
    assert len(calls) == 2


def test_real_malloc_trim_is_found_on_glibc() -> None:
    # These machines run glibc; elsewhere Trimmer quietly does nothing.
    assert Trimmer().trim is not None
    assert Trimmer().trim() in (0, 1)  # type: ignore[misc]
