"""Token buckets per key (task UID), so one task cannot flood the API server."""

from __future__ import annotations

from collections import OrderedDict

from wallestars_api import tokenbucket


class TokenBuckets:
    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0 if allowed (a token is taken), else seconds until a token will be there."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens, wait = tokenbucket.take(tokens, at, now, self.rate, self.burst)
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # forget the least recently seen task
        return wait
