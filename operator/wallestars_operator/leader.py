"""Leader election with a coordination.k8s.io Lease: only the holder acts.

Every replica watches and caches; only the leader writes. As client-go's leaderelection
does, a replica never compares another node's clock with its own: it remembers when
(on its own monotonic clock) it last saw the Lease record change, and treats the lease
as expired only after it has itself seen no change for the lease duration. So a replica
whose wall clock is minutes off can neither take a live lease nor hold up a dead one.
The holder acts only until two thirds of the lease have passed since it last renewed
(measured from before its renewal request was sent), so it stops before any other
replica can consider the lease expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wallestars_api.kubeclient import ApiError, KubeClient

log = logging.getLogger("wallestars.operator.leader")


def micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Observed:
    """The Lease record as last seen, and when it was first seen so (local monotonic time)."""

    record: tuple[Any, ...]
    since: float


def record_of(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies one renewal of a lease: any change means its holder is alive."""
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
            spec.get("leaseTransitions"), spec.get("leaseDurationSeconds"))  # fmt: skip


def observe(prev: Observed | None, spec: Mapping[str, Any], mono: float) -> Observed:
    """The new observation after reading ``spec`` at local time ``mono`` (pure)."""
    rec = record_of(spec)
    if prev is not None and prev.record == rec:
        return prev
    return Observed(rec, mono)


def may_take(
    obs: Observed, spec: Mapping[str, Any], me: str, default_seconds: float, mono: float
) -> bool:
    """Whether this replica may write the lease now (pure): it holds it, nobody does, or
    the record has not changed for the lease duration as this replica has seen it."""
    holder = spec.get("holderIdentity")
    if not holder or holder == me:
        return True
    duration = float(spec.get("leaseDurationSeconds") or default_seconds)
    return obs.since + duration <= mono


class Leader:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        seconds: float,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.c = client
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self.seconds = seconds
        self.wall = wall  # only written into the Lease, for people to read
        self.mono = mono  # every decision
        self.is_leader = False
        self.valid_until = float("-inf")  # monotonic
        self.observed: Observed | None = None
        self.changed = asyncio.Event()

    @property
    def acting(self) -> bool:
        return self.is_leader and self.mono() < self.valid_until

    async def run(self) -> None:
        while True:
            try:
                await self.attempt()
            except Exception as e:
                log.warning("lease: %s", e)
                self._set(False)
            await asyncio.sleep(self.seconds / 3)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            log.info("leadership %s (%s)", "acquired" if leader else "lost", self.identity)
            self.changed.set()
        self.is_leader = leader

    async def attempt(self) -> None:
        started = self.mono()  # before the request: validity never outlasts the lease
        now = self.wall()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.seconds),
            "renewTime": micro(now),
        }
        try:
            lease = await self.c.request("GET", self.path)
        except ApiError as e:
            if e.code != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name},
                    "spec": {**spec, "acquireTime": micro(now), "leaseTransitions": 0}}  # fmt: skip
            try:
                await self.c.request("POST", self.collection, body)
            except ApiError as e2:
                if e2.code == 409:
                    return
                raise
            self._won(started, {**spec, "acquireTime": micro(now), "leaseTransitions": 0})
            return
        cur = lease.get("spec") or {}
        self.observed = observe(self.observed, cur, self.mono())
        if not may_take(self.observed, cur, self.identity, self.seconds, self.mono()):
            self._set(False)
            return
        if cur.get("holderIdentity") != self.identity:
            spec["acquireTime"] = micro(now)
            spec["leaseTransitions"] = int(cur.get("leaseTransitions") or 0) + 1
        else:
            spec["acquireTime"] = cur.get("acquireTime") or micro(now)
            spec["leaseTransitions"] = int(cur.get("leaseTransitions") or 0)
        lease["spec"] = {**cur, **spec}
        try:  # a PUT with the read resourceVersion: two contenders cannot both win
            await self.c.request("PUT", self.path, lease)
        except ApiError as e:
            if e.code == 409:
                self._set(False)
                return
            raise
        self._won(started, lease["spec"])

    def _won(self, started: float, spec: Mapping[str, Any]) -> None:
        self.observed = Observed(record_of(spec), started)
        # Act only until two thirds of the lease have passed without a renewal.
        self.valid_until = started + self.seconds * 2 / 3
        self._set(True)
