"""Retry policy: pure, shared by the operator and the webhook service."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULTS: dict[str, float] = {
    "limit": 3,
    "backoffSeconds": 10,
    "factor": 2,
    "maxBackoffSeconds": 300,
    "jitter": 0.2,
}


@dataclass(frozen=True)
class RetryPolicy:
    limit: int = 3
    backoff_seconds: float = 10
    factor: float = 2
    max_backoff_seconds: float = 300
    jitter: float = 0.2

    @classmethod
    def from_spec(cls, retries: Mapping[str, Any] | None) -> RetryPolicy:
        r = {**DEFAULTS, **(retries or {})}
        return cls(
            limit=int(r["limit"]),
            backoff_seconds=float(r["backoffSeconds"]),
            factor=float(r["factor"]),
            max_backoff_seconds=float(r["maxBackoffSeconds"]),
            jitter=float(r["jitter"]),
        )

    def backoff(self, failed_attempt: int, rand: float) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed.

        Exponential, capped, then jittered downwards by up to ``jitter`` of itself
        (``rand`` in [0, 1)), so retries of many tasks do not arrive together and the
        cap is never exceeded.
        """
        base = self.backoff_seconds * self.factor ** max(failed_attempt - 1, 0)
        capped = min(base, self.max_backoff_seconds)
        return capped * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_seconds: float = 0.0
    reason: str = ""


def decide(
    policy: RetryPolicy, failed_attempt: int, retryable: bool, rand: float | None = None
) -> Decision:
    """Retry or give up after attempt ``failed_attempt`` failed."""
    if not retryable:
        return Decision(False, reason="NonRetryableError")
    if failed_attempt > policy.limit:  # limit counts retries after the first attempt
        return Decision(False, reason="RetriesExhausted")
    r = random.random() if rand is None else rand  # noqa: S311 (jitter, not secrecy)
    return Decision(True, policy.backoff(failed_attempt, r))
