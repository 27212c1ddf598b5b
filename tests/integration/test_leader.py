"""Leader election on the real API server with skewed clocks (issue #13, item 7).

Two Leader instances contend for one Lease, as two operator replicas on two nodes
would; one of them has a wall clock 60 s off (an injectable clock). With expiry decided
by comparing the holder's renewTime with the local clock, the skewed replica would take
a live lease (clock ahead) or keep a dead one from being taken (holder's clock ahead).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import localcluster
from wallestars_api.kubeclient import KubeClient
from wallestars_operator.leader import Leader

SECONDS = 2.0  # a short lease, so the test takes seconds


def skewed(by: float) -> object:
    return lambda: datetime.now(UTC) + timedelta(seconds=by)


async def contend(a: Leader, b: Leader, rounds: int) -> list[tuple[bool, bool]]:
    """Both replicas try every third of a lease, as Leader.run does; who acts each round."""
    seen = []
    for _ in range(rounds):
        await a.attempt()
        await b.attempt()
        seen.append((a.acting, b.acting))
        await asyncio.sleep(SECONDS / 3)
    return seen


async def pair(
    cluster: localcluster.Cluster, skew_a: float, skew_b: float
) -> tuple[Leader, Leader, KubeClient]:
    c = KubeClient.from_env(cluster.kubeconfig)
    name = f"lease-{uuid.uuid4().hex[:8]}"
    a = Leader(c, "default", name, "replica-a", SECONDS, wall=skewed(skew_a))  # type: ignore[arg-type]
    b = Leader(c, "default", name, "replica-b", SECONDS, wall=skewed(skew_b))  # type: ignore[arg-type]
    return a, b, c


async def test_a_replica_with_its_clock_ahead_never_takes_a_live_lease(
    cluster: localcluster.Cluster,
) -> None:
    a, b, c = await pair(cluster, 0, +60)
    try:
        rounds = await contend(a, b, 9)  # three lease durations
        assert all(acting_a and not acting_b for acting_a, acting_b in rounds), rounds
    finally:
        await c.close()


async def test_a_dead_holder_with_its_clock_ahead_is_replaced_after_one_lease(
    cluster: localcluster.Cluster,
) -> None:
    a, b, c = await pair(cluster, +60, 0)
    try:
        await a.attempt()
        assert a.acting
        await b.attempt()
        assert not b.acting
        # a dies (no more renewals). b takes over once it has seen no change for a lease,
        # although a's renewTime is a minute in b's future.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not b.acting:
            await asyncio.sleep(0.1)
            await b.attempt()
            assert loop.time() - t0 < SECONDS * 3, "b never took the dead holder's lease"
        assert loop.time() - t0 >= SECONDS * 0.9
        assert not a.acting  # a's own validity ran out before b could take over
    finally:
        await c.close()
