"""Kubernetes Events, sent off the path that made the transition they announce.

A transition is written first; its Event follows from a bounded queue drained by a few
workers, so neither a dispatch (operator) nor a callback's answer (webhook service)
waits for an Event (like client-go's event recorder). When the queue is full the newest
Event is dropped and counted: Events are best effort, the status is the record. Both
components use this one implementation, each under its own reportingController.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from wallestars_api.kubeclient import ApiError, KubeClient
from wallestars_api.resources import API_VERSION

log = logging.getLogger("wallestars.events")

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


def event_object(
    ref: Mapping[str, str], reason: str, message: str, warning: bool, controller: str,
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """An events.k8s.io/v1 Event about the object ``ref`` names (kubectl describe shows it)."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{ref['name'][:200]}.{uuid.uuid4().hex[:16]}",
            "namespace": ref["namespace"],
        },
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": f"agents.wallestars.io/{controller}",
        "reportingInstance": f"wallestars-{controller}",
        "action": reason,
        "reason": reason,
        "type": "Warning" if warning else "Normal",
        "note": message[:1024],
        "regarding": dict(ref),
    }


async def send_event(
    client: KubeClient, controller: str, ref: Mapping[str, str], reason: str, message: str,
    warning: bool = False,
) -> None:  # fmt: skip
    ev = event_object(ref, reason, message, warning, controller, datetime.now(UTC))
    try:
        await client.request(
            "POST", f"/apis/events.k8s.io/v1/namespaces/{ref['namespace']}/events", ev
        )
    except ApiError as e:  # an Event is worth a log line, never a failed transition
        log.warning("event %s on %s/%s: %s", reason, ref["namespace"], ref["name"], e)


class EventQueue:
    def __init__(
        self, send: Send, size: int = 10_000, workers: int = 4,
        dropped: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        self.send = send
        self.dropped = dropped
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
            self.dropped()
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
