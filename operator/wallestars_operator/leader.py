"""Leader election with a coordination.k8s.io Lease: only the holder acts.

Every replica watches and caches; only the leader writes. A replica that cannot renew
in time stops acting before its lease can expire for the others.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from wallestars_api.kubeclient import ApiError, KubeClient

log = logging.getLogger("wallestars.operator.leader")


def micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.strptime(s.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


class Leader:
    def __init__(
        self, client: KubeClient, namespace: str, name: str, identity: str, seconds: float
    ) -> None:
        self.c = client
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self.seconds = seconds
        self.is_leader = False
        self.valid_until = datetime.min.replace(tzinfo=UTC)
        self.changed = asyncio.Event()

    @property
    def acting(self) -> bool:
        return self.is_leader and datetime.now(UTC) < self.valid_until

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
        now = datetime.now(UTC)
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
                    "spec": {**spec, "acquireTime": micro(now)}}  # fmt: skip
            try:
                await self.c.request("POST", self.collection, body)
            except ApiError as e2:
                if e2.code == 409:
                    return
                raise
            self._won(now)
            return
        cur = lease.get("spec") or {}
        renewed = parse_micro(cur.get("renewTime")) or datetime.min.replace(tzinfo=UTC)
        expired = (
            renewed + timedelta(seconds=float(cur.get("leaseDurationSeconds") or self.seconds))
            < now
        )
        if cur.get("holderIdentity") != self.identity and not expired:
            self._set(False)
            return
        if cur.get("holderIdentity") != self.identity:
            spec["acquireTime"] = micro(now)
            spec["leaseTransitions"] = int(cur.get("leaseTransitions") or 0) + 1
        else:
            spec["acquireTime"] = cur.get("acquireTime") or micro(now)
        lease["spec"] = {**cur, **spec}
        try:  # a PUT with the read resourceVersion: two contenders cannot both win
            await self.c.request("PUT", self.path, lease)
        except ApiError as e:
            if e.code == 409:
                self._set(False)
                return
            raise
        self._won(now)

    def _won(self, at: datetime) -> None:
        # Act only until two thirds of the lease have passed without a renewal.
        self.valid_until = at + timedelta(seconds=self.seconds * 2 / 3)
        self._set(True)
