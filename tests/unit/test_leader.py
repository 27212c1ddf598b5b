"""Lease expiry as client-go decides it: by what this replica has observed, never by
comparing another replica's renewTime with the local wall clock."""

from __future__ import annotations

from wallestars_operator.leader import Observed, may_take, observe

SPEC = {"holderIdentity": "a", "renewTime": "2026-12-02T10:00:00.000000Z",
        "leaseDurationSeconds": 15, "acquireTime": "2026-12-02T09:00:00.000000Z"}  # fmt: skip


def test_a_renewal_restarts_the_observed_time() -> None:
    first = observe(None, SPEC, 100.0)
    assert first.since == 100.0
    assert observe(first, SPEC, 110.0) is first  # unchanged: still the first sighting
    renewed = observe(first, {**SPEC, "renewTime": "2026-12-02T10:00:05.000000Z"}, 112.0)
    assert renewed.since == 112.0


def test_another_holders_lease_expires_only_after_the_duration_unchanged_here() -> None:
    obs = Observed(observe(None, SPEC, 0).record, 100.0)
    assert not may_take(obs, SPEC, "b", 15, 114.9)
    assert may_take(obs, SPEC, "b", 15, 115.0)


def test_renew_times_in_the_far_future_or_past_do_not_matter() -> None:
    """A holder whose clock is an hour ahead (or behind) is judged the same way."""
    for renew in ("2026-12-02T11:00:00.000000Z", "2026-12-02T09:00:00.000000Z"):
        spec = {**SPEC, "renewTime": renew}
        obs = observe(None, spec, 50.0)
        assert not may_take(obs, spec, "b", 15, 60.0)
        assert may_take(obs, spec, "b", 15, 65.0)


def test_own_or_free_lease_may_always_be_written() -> None:
    obs = observe(None, SPEC, 0.0)
    assert may_take(obs, SPEC, "a", 15, 0.0)
    assert may_take(obs, {**SPEC, "holderIdentity": ""}, "b", 15, 0.0)
