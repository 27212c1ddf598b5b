"""The token-bucket rule, once, for every rate limit in the project (pure)."""

from __future__ import annotations


def take(tokens: float, at: float, now: float, rate: float, burst: float) -> tuple[float, float]:
    """Refill ``tokens`` (as of time ``at``) up to ``now`` and try to take one.

    Returns (tokens left, wait): wait is 0 when a token was taken, else the seconds
    until one will be there (nothing is taken then).
    """
    tokens = min(burst, tokens + (now - at) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate
