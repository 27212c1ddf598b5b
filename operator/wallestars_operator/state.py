"""What the operator has seen of the API: caches fed by kopf's watches.

Nothing here matters across a restart: everything is rebuilt from the watches' initial
listings (level-triggered). Objects are kept by resourceVersion, so a watch event older
than our own write's answer never overwrites it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import TERMINAL, parse_ts
from wallestars_api.objects import without_bookkeeping

Key = tuple[str, str]
KINDS = ("tasks", "agents", "jobs", "pods", "workflows", "schedules")
WORKFLOW_LABEL = "agents.wallestars.io/workflow"
SCHEDULE_LABEL = "agents.wallestars.io/schedule"
SERIES_LABEL = "agents.wallestars.io/series"
# Objects another of ours created, found by these labels without walking every object
# (and the runs of a workflow series, for {{ previous }}).
INDEXED = {
    "tasks": (WORKFLOW_LABEL, SCHEDULE_LABEL),
    "workflows": (SCHEDULE_LABEL, SERIES_LABEL),
}


# What the operator still reads of a finished task: TTL deletion and the Agent's statistics.
FINISHED_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
FINISHED_STATUS = ("phase", "agent", "completionTime", "durationSeconds", "attempt")


def slim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the caches keep of an object: never managedFields or kubectl's last-applied
    copy, and of a finished task only what TTL deletion and Agent statistics read. A
    cache of 10,000 tasks is mostly finished tasks; their payloads, results and attempt
    histories stay in the API server."""
    meta = obj["metadata"]
    status = obj.get("status") or {}
    if kind == "tasks" and status.get("phase") in TERMINAL:
        spec = obj.get("spec") or {}
        # A workflow's step keeps its outcome (later steps' payloads may read it), and a
        # step or a scheduled run its labels and owner (how it is found).
        step = any(label in (meta.get("labels") or {}) for label in INDEXED["tasks"])
        keep_meta = (
            (*FINISHED_META, "labels", "annotations", "ownerReferences") if step else FINISHED_META
        )
        keep_status = (
            (*FINISHED_STATUS, "result", "error", "reason", "message", "startTime")
            if step
            else FINISHED_STATUS
        )
        return {
            "metadata": {k: meta[k] for k in keep_meta if k in meta},
            "spec": {k: spec[k] for k in ("ttlSecondsAfterFinished",) if k in spec},
            "status": {k: status[k] for k in keep_status if k in status},
        }
    return without_bookkeeping(obj)


def rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class State:
    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {k: {} for k in KINDS}
        self.wake = asyncio.Event()
        # When each new, never-dispatched task was first seen (monotonic): the operator's
        # own share of created -> dispatched, as a metric.
        self.seen_at: dict[Key, float] = {}
        # What a pass looks at, so its cost does not grow with the finished tasks kept:
        # tasks not yet in a terminal phase, and when each finished task's TTL is due.
        self.live: set[Key] = set()
        self.expiry: dict[Key, datetime] = {}
        # (kind, label, namespace, value) -> keys (INDEXED): a workflow's pass reads its own
        # steps, a schedule's its own runs, without walking every task.
        self.labelled: dict[tuple[str, str, str, str], set[Key]] = {}

    def key(self, kind: str, obj: Mapping[str, Any]) -> Key:
        meta = obj["metadata"]
        if kind == "pods":  # one pod per attempt Job matters: index pods by their Job
            return (
                meta.get("namespace", ""),
                (meta.get("labels") or {}).get("job-name", meta["name"]),
            )
        return (meta.get("namespace", ""), meta["name"])

    def put(self, kind: str, obj: Mapping[str, Any]) -> None:
        store = self.objects[kind]
        k = self.key(kind, obj)
        old = store.get(k)
        same_object = old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid")
        if same_object and rv(old) > rv(obj):  # type: ignore[arg-type]
            return
        if kind == "tasks" and old is None and not (obj.get("status") or {}).get("phase"):
            self.seen_at[k] = time.monotonic()
        store[k] = slim(kind, obj)
        if kind == "tasks":
            self._index(k, store[k])
        labels = obj["metadata"].get("labels") or {}
        for label in INDEXED.get(kind, ()):
            if value := labels.get(label):
                self.labelled.setdefault((kind, label, k[0], value), set()).add(k)
        self.wake.set()

    def _index(self, k: Key, obj: Mapping[str, Any]) -> None:
        status = obj.get("status") or {}
        if status.get("phase") not in TERMINAL:
            self.live.add(k)
            self.expiry.pop(k, None)
            return
        self.live.discard(k)
        ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
        done = parse_ts(status.get("completionTime"))
        if ttl is not None and done is not None:
            self.expiry[k] = done + timedelta(seconds=int(ttl))
        else:
            self.expiry.pop(k, None)

    def remove(self, kind: str, obj: Mapping[str, Any]) -> None:
        store = self.objects[kind]
        k = self.key(kind, obj)
        old = store.get(k)
        if old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid"):
            del store[k]
            labels = old["metadata"].get("labels") or {}
            for label in INDEXED.get(kind, ()):
                if value := labels.get(label):
                    self.labelled.get((kind, label, k[0], value), set()).discard(k)
            self.seen_at.pop(k, None)
            self.live.discard(k)
            self.expiry.pop(k, None)
            if kind == "jobs":  # a Job's pod is cached (on demand) only while the Job exists
                self.objects["pods"].pop(k, None)
            self.wake.set()

    def observe(self, kind: str, event: Mapping[str, Any]) -> None:
        """A kopf watch event: {'type': ADDED|MODIFIED|DELETED|None, 'object': {...}}."""
        obj = event.get("object")
        if not isinstance(obj, Mapping) or "metadata" not in obj:
            return
        if event.get("type") == "DELETED":
            self.remove(kind, obj)
        else:
            self.put(kind, obj)

    @property
    def tasks(self) -> dict[Key, dict[str, Any]]:
        return self.objects["tasks"]

    @property
    def agents(self) -> dict[Key, dict[str, Any]]:
        return self.objects["agents"]

    @property
    def jobs(self) -> dict[Key, dict[str, Any]]:
        return self.objects["jobs"]

    @property
    def pods(self) -> dict[Key, dict[str, Any]]:
        return self.objects["pods"]

    @property
    def workflows(self) -> dict[Key, dict[str, Any]]:
        return self.objects["workflows"]

    @property
    def schedules(self) -> dict[Key, dict[str, Any]]:
        return self.objects["schedules"]

    def with_label(self, kind: str, label: str, ns: str, value: str) -> list[dict[str, Any]]:
        store = self.objects[kind]
        return [o for k in self.labelled.get((kind, label, ns, value), ()) if (o := store.get(k))]

    def workflow_tasks(self, ns: str, workflow_label: str) -> list[dict[str, Any]]:
        return self.with_label("tasks", WORKFLOW_LABEL, ns, workflow_label)
