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


def reserve(tokens: float, at: float, now: float, rate: float, burst: float) -> tuple[float, float]:
    """Refill as ``take`` does and take a token whether or not one is there: the
    balance may go below zero, each caller owing its place in line. Returns (tokens
    left, wait): the caller may go after ``wait`` seconds. Callers are served in the
    order they reserve, each with one sleep (golang's rate.Limiter.Wait), instead of
    every waiter waking to race for each new token."""
    tokens = min(burst, tokens + (now - at) * rate) - 1.0
    return tokens, max(0.0, -tokens / rate)
