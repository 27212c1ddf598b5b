"""A token bucket for the operator's own API calls (client-side QPS limit)."""

from __future__ import annotations

import asyncio
import time

from wallestars_api import tokenbucket


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()
        self.waited = 0.0  # total seconds callers waited: shows the limit holding
        self.spare_lock = asyncio.Lock()

    def try_take(self) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        now = time.monotonic()
        self.tokens, wait = tokenbucket.take(self.tokens, self.at, now, self.qps, self.burst)
        self.at = now
        return wait

    async def take(self) -> None:
        """Wait for a token, served in order of asking (a reservation: one sleep each)."""
        now = time.monotonic()
        self.tokens, wait = tokenbucket.reserve(self.tokens, self.at, now, self.qps, self.burst)
        self.at = now
        if wait > 0:
            self.waited += wait
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.tokens += 1.0  # its place given back: those after it wait no longer
                raise

    async def spare(self, min_share: float = 0.1) -> None:
        """Wait until the bucket is at least half full, taking nothing (the request that
        follows takes its token): work that can lag (notification records) goes at
        whatever rate the rest leaves, and at ``min_share`` of the rate however busy the
        rest is (so it is never starved). One such waiter at a time, in order."""
        async with self.spare_lock:
            floor = max(1.0, self.burst / 2)
            give_up_at = time.monotonic() + 1.0 / (self.qps * min_share)
            while (now := time.monotonic()) < give_up_at:
                tokens = min(self.burst, self.tokens + (now - self.at) * self.qps)
                if tokens >= floor:
                    return
                await asyncio.sleep(min((floor - tokens) / self.qps, give_up_at - now))
