"""Kubernetes Events sent off the reconcile path.

A transition is written first; its Event follows from a bounded queue drained by a few
workers, so dispatch never waits for an Event (like client-go's event recorder). When
the queue is full the newest Event is dropped and counted: Events are best effort,
the status is the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from wallestars_api.resources import API_VERSION

from wallestars_operator import metrics

log = logging.getLogger("wallestars.operator")

DRAIN_SECONDS = 5.0  # on shutdown, how long queued Events may still go out
Send = Callable[[Mapping[str, Any], str, str, bool], Awaitable[None]]


def reference(obj: Mapping[str, Any]) -> dict[str, str]:
    """What an Event says of the object it is about (its `regarding`)."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", "AgentTask"),
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
    }


class EventQueue:
    def __init__(self, send: Send, size: int = 10_000, workers: int = 4) -> None:
        self.send = send
        self.queue: asyncio.Queue[tuple[Mapping[str, Any], str, str, bool]] = asyncio.Queue(size)
        self.n_workers = workers
        self.workers: list[asyncio.Task[None]] = []

    def post(self, obj: Mapping[str, Any], reason: str, message: str, warning: bool) -> None:
        # Only the reference waits in the queue, never the object: under a burst thousands
        # of Events queue up, and whole objects (managedFields and all) were most of the
        # operator's peak memory (bench/RESULTS.md).
        try:
            self.queue.put_nowait((reference(obj), reason, message, warning))
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            log.warning("event queue full; dropped %s on %s", reason, obj["metadata"]["name"])

    def start(self) -> None:
        self.workers = [asyncio.create_task(self._work()) for _ in range(self.n_workers)]

    async def _work(self) -> None:
        while True:
            obj, reason, message, warning = await self.queue.get()
            try:
                await self.send(obj, reason, message, warning)
            except Exception:
                log.exception("event %s not sent", reason)
            finally:
                self.queue.task_done()

    async def close(self) -> None:
        """Wait (bounded) for queued Events, then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), DRAIN_SECONDS)
        for w in self.workers:
            w.cancel()
        for w in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
