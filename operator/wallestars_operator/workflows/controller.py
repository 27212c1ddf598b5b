"""AgentWorkflows at the edge: each pass decides every unfinished workflow from the
caches (decide.py) and carries the plan out in the background, one write chain per
workflow at a time (the Reconciler's spawn/free, keyed apart from tasks)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from wallestars_api.events import EventQueue
from wallestars_api.kubeclient import ApiError

from wallestars_operator import metrics
from wallestars_operator.kube import Kube
from wallestars_operator.state import State
from wallestars_operator.workflows.decide import FINISHED, Plan, decide
from wallestars_operator.workflows.series import (
    previous_run,
    previous_view,
    reads_previous,
    series_of,
)

log = logging.getLogger("wallestars.operator.workflows")
Key = tuple[str, str]


def key(wf: Mapping[str, Any]) -> Key:
    """Apart from task keys: no object name has a '/'."""
    return (wf["metadata"]["namespace"], "workflow/" + wf["metadata"]["name"])


class Workflows:
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

    def step_tasks(self, wf: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The workflow's step tasks the caches hold, by name (only those it owns: a
        workflow deleted and made again under the same name has a new UID)."""
        meta = wf["metadata"]
        label = meta["name"][:63].rstrip("-._")
        out: dict[str, dict[str, Any]] = {}
        for t in self.state.workflow_tasks(meta["namespace"], label):
            refs = t["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == meta["uid"] for r in refs):
                out[t["metadata"]["name"]] = t
        return out

    def previous(self, wf: Mapping[str, Any]) -> dict[str, Any] | None:
        """{{ previous }} for a workflow that reads it: its series' last good run."""
        if not reads_previous(wf.get("spec") or {}):
            return None
        series = series_of(wf)
        if series is None:
            return {"exists": False}
        ns = wf["metadata"]["namespace"]
        prev = previous_run(wf, self.state.with_label("workflows", series[0], ns, series[1]))
        return previous_view(prev, self.step_tasks(prev) if prev is not None else {})

    def tick(self, now: datetime, mono: float) -> None:
        metrics.WORKFLOWS_RUNNING.set(sum(1 for wf in self.state.workflows.values()
                                          if (wf.get("status") or {}).get("phase") not in FINISHED))  # fmt: skip
        for wf in list(self.state.workflows.values()):
            k = key(wf)
            if not self.free(k, mono):
                continue
            status = wf.get("status") or {}
            spec = wf.get("spec") or {}
            if status.get("phase") in FINISHED and spec.get("ttlSecondsAfterFinished") is None:
                continue
            try:
                plan = decide(wf, self.step_tasks(wf), now, self.previous(wf))
            except Exception:  # one malformed workflow must not stop the others
                log.exception(
                    "%s/%s: no decision", wf["metadata"]["namespace"], wf["metadata"]["name"]
                )
                continue
            if plan.create or plan.cancel or plan.delete or plan.status != status:
                self.spawn(k, functools.partial(self.act, wf, plan))

    async def act(self, wf: Mapping[str, Any], plan: Plan) -> None:
        meta = wf["metadata"]
        ns = meta["namespace"]
        if plan.delete:
            await self.kube.delete_workflow(wf)
            self.state.remove("workflows", wf)
            return
        status = plan.status
        for task in plan.create:
            try:
                if await self.kube.create_task(task):
                    metrics.WORKFLOW_STEPS.labels("created").inc()
                    since = plan.ready_since.get(task["metadata"]["name"])
                    if since is not None:
                        metrics.STEP_START_DELAY.observe(
                            max(0.0, (datetime.now(UTC) - since).total_seconds())
                        )
            except ApiError as e:
                if e.code in (401, 429) or e.code >= 500:
                    raise  # the API server's trouble: the next pass tries again
                # Refused (the rendered payload broke the AgentTask schema): the step fails.
                step = task["metadata"]["labels"]["agents.wallestars.io/step"]
                for s in status.get("steps") or []:
                    if s["name"] == step:
                        s.pop("task", None)
                        s.update(phase="Failed", message=(
                            f"the API server refused the step's AgentTask: {e.message}"))  # fmt: skip
                self.events.post(wf, "StepFailed", f"step {step}: {e.message}", True)
        for name in plan.cancel:
            await self.kube.cancel("AgentTask", ns, name)
        if status != (wf.get("status") or {}):
            written = await self.kube.patch_workflow_status(wf, status)
            if written is None:
                return  # someone wrote first: decided again from what they wrote
            self.state.put("workflows", written)
            old_phase = (wf.get("status") or {}).get("phase")
            if status.get("phase") in FINISHED and old_phase not in FINISHED:
                metrics.WORKFLOWS_FINISHED.labels(status["phase"]).inc()
        for reason, message, warning in plan.events:
            self.events.post(wf, reason, message, warning)
