"""The kopf side: watches feed the caches; one reconcile loop acts (see reconcile.py).

Only event handlers and indexes-free watches are used: kopf keeps no progress or
diff-base annotations for them and adds no finalizers, so its bookkeeping costs no
API writes. Where kopf would store state, it is configured on our own domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from typing import Any

import kopf
from prometheus_client import start_http_server
from wallestars_api import logs
from wallestars_api.events import EventQueue
from wallestars_api.kubeclient import SA_DIR, KubeClient, in_cluster_server
from wallestars_api.resources import GROUP, VERSION
from wallestars_sdk.keys import parse_master_keys

from wallestars_operator import metrics
from wallestars_operator.config import Settings, csv
from wallestars_operator.kube import Kube
from wallestars_operator.leader import Leader
from wallestars_operator.manifests import AttemptConfig
from wallestars_operator.notify.deliveries import DEFAULT_ON, Sink
from wallestars_operator.notify.sender import Notifier, NotifyConfig
from wallestars_operator.ratelimit import TokenBucket
from wallestars_operator.reconcile import Reconciler
from wallestars_operator.state import State

log = logging.getLogger("wallestars.operator")
STATE = State()
NOTIFIER: Notifier | None = None
MANAGED = {"app.kubernetes.io/managed-by": "wallestars-operator"}
_tasks: list[asyncio.Task[None]] = []
_closers: list[Any] = []
_metrics_server: list[Any] = []


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global STATE, NOTIFIER
    s = Settings()
    # A fresh cache on every kopf run (__main__ runs kopf again after a transient API
    # error): what was deleted meanwhile must not linger, and the wake-up Event belongs
    # to this run's event loop.
    STATE = State()
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
    # As many connections as writes may be in flight (Reconciler.sem): each pooled TLS
    # connection keeps its own read buffers.
    client = KubeClient.from_env(s.kubeconfig, limiter=bucket, connections=32)
    _closers.append(client)
    kube = Kube(client)
    events = EventQueue(kube.event, dropped=metrics.EVENTS_DROPPED.inc)
    events.start()
    _closers.append(events)
    masters = parse_master_keys(s.master_keys_file.read_text())
    rec = Reconciler(
        STATE,
        kube,
        events,
        masters,
        AttemptConfig(
            s.callback_base_url,
            s.job_ttl_seconds,
            browser_image=s.browser_image,
            deny_cidrs=csv(s.deny_cidrs),
            allow_plain_http=s.insecure_development_allow_plain_http,
            secret_cache_seconds=s.secret_cache_seconds,
            health_probe_seconds=s.health_probe_seconds,
            # Absent with a public issuer (the chart mounts it optionally): the trust store.
            cloud_callback_base=s.cloud_callback_base_url,
            callback_ca=s.callback_ca_file.read_text()
            if s.callback_ca_file and s.callback_ca_file.exists()
            else "",
            client_ca=(s.client_ca_cert_file.read_bytes(), s.client_ca_key_file.read_bytes())
            if s.client_ca_cert_file and s.client_ca_key_file
            else None,
        ),
        s.callback_grace_seconds,
        s.api_qps,
        lambda: leader.acting,
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
    if not _metrics_server:  # once per process: it outlives kopf's runs
        _metrics_server.append(start_http_server(s.metrics_port))

    async def loop() -> None:
        await asyncio.sleep(1.0)  # let the watches list what exists first
        took = 0.0
        while True:
            STATE.wake.clear()
            if leader.acting:
                t0 = time.perf_counter()
                try:
                    await rec.tick()
                except Exception:
                    log.exception("reconcile pass failed")
                took = time.perf_counter() - t0
                metrics.PASS_SECONDS.observe(took)
            metrics.API_CALLS.set(client.calls)
            metrics.RATE_LIMIT_WAIT.set(bucket.waited)
            metrics.RETRY_AFTER_WAIT.set(rec.retry_after_waited)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(STATE.wake.wait(), timeout=min(s.resync_seconds, 1.0))
            # Gather a burst of events into one pass: wait as long as the last pass took, so
            # passes use at most about half the loop however many tasks are cached.
            await asyncio.sleep(min(max(took, 0.002), 0.5))

    NOTIFIER = Notifier(kube, rec.cloud.secret_value, notify_config(s), lambda: leader.acting,
                        bucket.spare)  # fmt: skip
    _closers.append(NOTIFIER)
    _tasks.append(asyncio.create_task(NOTIFIER.run()))
    _tasks.append(asyncio.create_task(leader.run()))
    _tasks.append(asyncio.create_task(loop()))
    # What exists now (modules, kopf, pydantic models: ~90,000 objects) lives as long as
    # the process. Frozen, the full collections a busy operator runs every few seconds no
    # longer walk it each time: they took 36-53 ms, a pause every task in flight waited
    # out (the p99 of created -> dispatched, bench/RESULTS.md).
    gc.collect()
    gc.freeze()


def notify_config(s: Settings) -> NotifyConfig:
    sink = None
    if s.notify_sink_url:
        sink = Sink(s.notify_sink_url, s.lease_namespace, s.notify_sink_secret,
                    s.notify_sink_secret_key, frozenset(csv(s.notify_sink_namespaces)),
                    frozenset(csv(s.notify_sink_phases) or DEFAULT_ON), s.notify_sink_format)  # fmt: skip
    return NotifyConfig(
        sink=sink,
        max_age_seconds=s.notify_max_age_seconds,
        timeout_seconds=s.notify_timeout_seconds,
        allow_plain_http=s.insecure_development_allow_plain_http,
        allow_private_cidrs=csv(s.notify_allow_private_cidrs),
        allow_private_addresses=csv(s.notify_allow_private_addresses),
        deny_cidrs=csv(s.deny_cidrs),
        resolvers=csv(s.notify_resolvers),
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for t in _tasks:
        t.cancel()
    for t in _tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for c in reversed(_closers):  # queued Events go out before the client closes
        await c.close()
    _tasks.clear()
    _closers.clear()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kw: Any) -> kopf.ConnectionInfo | None:
    """kopf's own in-cluster login names https://kubernetes.default.svc (cluster DNS, port
    443); this one finds the API server as client-go does, from the environment, so the
    operator and its own aiohttp client always talk to the same server."""
    server = in_cluster_server() if Settings().kubeconfig is None else None
    if server is None:
        return kopf.login_with_kubeconfig(settings=settings, **kw)
    return kopf.ConnectionInfo(
        server=server,
        ca_path=str(SA_DIR / "ca.crt"),
        token=(SA_DIR / "token").read_text().strip(),  # read again on every re-login
        default_namespace=ns.read_text().strip() if (ns := SA_DIR / "namespace").exists() else None,
        trust_env=settings.networking.trust_env,
    )


# The handlers are coroutines on purpose: kopf runs plain functions in a thread pool, and
# the caches and the loop's wake-up Event belong to the event loop's thread.
@kopf.on.event(GROUP, VERSION, "agenttasks")
async def task_event(event: kopf.RawEvent, **_: Any) -> None:
    if NOTIFIER is not None:  # before the cache slims a finished task: its result is sent
        NOTIFIER.observe("AgentTask", event)
    STATE.observe("tasks", event)


@kopf.on.event(GROUP, VERSION, "agents")
async def agent_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("agents", event)


@kopf.on.event(GROUP, VERSION, "agentworkflows")
async def workflow_event(event: kopf.RawEvent, **_: Any) -> None:
    if NOTIFIER is not None:
        NOTIFIER.observe("AgentWorkflow", event)
    STATE.observe("workflows", event)


@kopf.on.event(GROUP, VERSION, "agentschedules")
async def schedule_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("schedules", event)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(event: kopf.RawEvent, **_: Any) -> None:
    STATE.observe("jobs", event)
