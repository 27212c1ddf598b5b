"""AgentSchedules at the edge: each pass decides every schedule from the caches
(decide.py) and carries the plan out in the background, one write chain per schedule."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from wallestars_api.events import EventQueue

from wallestars_operator import metrics
from wallestars_operator.kube import Kube
from wallestars_operator.schedules.decide import SCHEDULE_LABEL, Plan, decide, run_kind
from wallestars_operator.state import State

log = logging.getLogger("wallestars.operator.schedules")
Key = tuple[str, str]


def key(s: Mapping[str, Any]) -> Key:
    """Apart from task and workflow keys: no object name has a '/'."""
    return (s["metadata"]["namespace"], "schedule/" + s["metadata"]["name"])


class Schedules:
    def __init__(
        self,
        state: State,
        kube: Kube,
        events: EventQueue,
        spawn: Callable[[Key, Callable[[], Awaitable[None]]], None],
        free: Callable[[Key, float], bool],
    ) -> None:
        self.state, self.kube, self.events = state, kube, events
        self.spawn, self.free = spawn, free

    def runs(self, s: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Its runs in the caches (only those it owns), each with its kind."""
        meta = s["metadata"]
        kind = run_kind(s.get("spec") or {})
        store = "workflows" if kind == "AgentWorkflow" else "tasks"
        label = meta["name"][:63].rstrip("-._")
        out = []
        for o in self.state.with_label(store, SCHEDULE_LABEL, meta["namespace"], label):
            if any(r.get("uid") == meta["uid"] for r in o["metadata"].get("ownerReferences") or []):
                out.append({**o, "kind": kind})
        return out

    def tick(self, now: datetime, mono: float) -> None:
        for s in list(self.state.schedules.values()):
            k = key(s)
            if not self.free(k, mono):
                continue
            try:
                plan = decide(s, self.runs(s), now)
            except Exception:  # one malformed schedule must not stop the others
                log.exception(
                    "%s/%s: no decision", s["metadata"]["namespace"], s["metadata"]["name"]
                )
                continue
            if plan.create or plan.cancel or plan.delete or plan.status != (s.get("status") or {}):
                self.spawn(k, functools.partial(self.act, s, plan))

    async def act(self, s: Mapping[str, Any], plan: Plan) -> None:
        for run in plan.cancel:
            await self.kube.cancel(run["kind"], s["metadata"]["namespace"], run["metadata"]["name"])
        for m in plan.create:
            if await self.kube.create_run(m):
                metrics.SCHEDULED_RUNS.labels(m["kind"]).inc()
        for run in plan.delete:
            await self.kube.delete_run(
                run["kind"], s["metadata"]["namespace"], run["metadata"]["name"]
            )
        written = await self.kube.patch_schedule_status(s, plan.status)
        if written is None:
            return  # someone wrote first: decided again from what they wrote
        self.state.put("schedules", written)
        for reason, message, warning in plan.events:
            if reason == "Skipped":
                metrics.SCHEDULED_RUNS.labels("skipped").inc()
            self.events.post(s, reason, message, warning)
