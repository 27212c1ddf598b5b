"""The kopf side: watches feed the caches; one reconcile loop acts (see reconcile.py).

Only event handlers and indexes-free watches are used: kopf keeps no progress or
diff-base annotations for them and adds no finalizers, so its bookkeeping costs no
API writes. Where kopf would store state, it is configured on our own domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import kopf
from prometheus_client import start_http_server
from wallestars_api import logs
from wallestars_api.kubeclient import KubeClient
from wallestars_api.resources import GROUP, VERSION
from wallestars_sdk.keys import parse_master_keys

from wallestars_operator import metrics
from wallestars_operator.config import Settings
from wallestars_operator.kube import Kube
from wallestars_operator.leader import Leader
from wallestars_operator.manifests import AttemptConfig
from wallestars_operator.ratelimit import TokenBucket
from wallestars_operator.reconcile import Reconciler
from wallestars_operator.state import State

log = logging.getLogger("wallestars.operator")
STATE = State()
MANAGED = {"app.kubernetes.io/managed-by": "wallestars-operator"}
_tasks: list[asyncio.Task[None]] = []
_closers: list[Any] = []


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    s = Settings()
    logs.setup(s.log_level)
    logging.getLogger("kopf.objects").setLevel(
        logging.WARNING
    )  # one line per watch event otherwise
    # kopf's own storage and finalizer, should a handler ever need them, on our domain.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # our own Events only, one per transition
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30

    bucket = TokenBucket(s.api_qps, s.api_burst)
    client = KubeClient.from_env(s.kubeconfig, limiter=bucket)
    _closers.append(client)
    kube = Kube(client)
    masters = parse_master_keys(s.master_keys_file.read_text())
    rec = Reconciler(
        STATE,
        kube,
        masters,
        AttemptConfig(s.callback_base_url, s.job_ttl_seconds),
        s.callback_grace_seconds,
    )
    _closers.append(rec)
    identity = s.identity or f"{socket.gethostname()}-{os.getpid()}"
    leader = Leader(
        KubeClient.from_env(s.kubeconfig),
        s.lease_namespace,
        s.lease_name,
        identity,
        s.lease_seconds,
    )
    start_http_server(s.metrics_port)

    async def loop() -> None:
        await asyncio.sleep(1.0)  # let the watches list what exists first
        while True:
            STATE.wake.clear()
            if leader.acting:
                try:
                    await rec.tick()
                except Exception:
                    log.exception("reconcile pass failed")
            metrics.API_CALLS.set(client.calls)
            metrics.RATE_LIMIT_WAIT.set(bucket.waited)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(STATE.wake.wait(), timeout=min(s.resync_seconds, 1.0))
            await asyncio.sleep(0.02)  # gather a burst of events into one pass

    _tasks.append(asyncio.create_task(leader.run()))
    _tasks.append(asyncio.create_task(loop()))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for t in _tasks:
        t.cancel()
    for t in _tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for c in _closers:
        await c.close()


@kopf.on.event(GROUP, VERSION, "agenttasks")
def task_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("tasks", event)


@kopf.on.event(GROUP, VERSION, "agents")
def agent_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("agents", event)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("jobs", event)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("pods", event)
