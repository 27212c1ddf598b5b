"""A token bucket for the operator's own API calls (client-side QPS limit)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()
        self.waited = 0.0  # total seconds callers waited: shows the limit holding

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.qps)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            delay = (1.0 - self.tokens) / self.qps
            self.waited += delay
            await asyncio.sleep(delay)


class Budget:
    """A token bucket that never waits: ``take()`` says whether a token was there.

    For writes that may be skipped and done on a later pass (queue positions)."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.rate = per_second
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
