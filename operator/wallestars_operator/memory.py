"""Give memory freed after a burst of watch events back to the operating system.

A burst (thousands of tasks created, dispatched and finished in a minute) leaves most of
the operator's resident memory free but kept by glibc's allocator: the parsed watch
events were short-lived, the cache entries made between them are not, so the heap's
free pages sit between live ones and glibc only ever trims the top of a heap on its own.
``malloc_trim(0)`` walks every arena and returns each whole free page (bench/RESULTS.md
has the before and after). It costs a few milliseconds, so it runs at most once per
interval and only after the caches changed by many objects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable


def _malloc_trim() -> Callable[[], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: int(fn(0))


class Trimmer:
    """Calls malloc_trim when ``churn`` objects were seen since the last trim, at most
    once per ``interval`` seconds."""

    def __init__(self, interval: float = 10.0, churn: int = 500) -> None:
        self.interval = interval
        self.churn = churn
        self.trim = _malloc_trim()
        self.last = time.monotonic()
        self.seen_at_last = 0
        self.trims = 0

    def maybe(self, seen: int, now: float | None = None) -> bool:
        """``seen`` is a running count of watch events; True if it trimmed."""
        now = time.monotonic() if now is None else now
        if self.trim is None or now - self.last < self.interval:
            return False
        if seen - self.seen_at_last < self.churn:
            return False
        self.trim()
        self.last = now
        self.seen_at_last = seen
        self.trims += 1
        return True
