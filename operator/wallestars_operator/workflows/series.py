"""Runs of one workflow over time, and what a run sees of the previous one (pure).

A workflow belongs to a series by its label `agents.wallestars.io/series`, or else by
the schedule that created it (`agents.wallestars.io/schedule`). ``{{ previous.* }}`` in a
step is the newest *succeeded* run of the series created before this one: a deploy
check compares its screenshot with the last good run's, so a regression that fails one
run does not become the next run's baseline. With no such run ``previous.exists`` is
false (a step's `when` tests it); any other path then leads nowhere, as a missing step
result does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from wallestars_api.resources import GROUP

from wallestars_operator.schedules.decide import SCHEDULE_LABEL

SERIES_LABEL = f"{GROUP}/series"


def series_of(wf: Mapping[str, Any]) -> tuple[str, str] | None:
    """(label, value) that names the workflow's series, if it has one."""
    labels = wf["metadata"].get("labels") or {}
    for label in (SERIES_LABEL, SCHEDULE_LABEL):
        if labels.get(label):
            return label, str(labels[label])
    return None


def reads_previous(spec: Mapping[str, Any]) -> bool:
    """Whether any expression of the workflow reads ``previous`` (the caches are searched
    only for workflows that do)."""
    return "previous." in json.dumps(
        [spec.get("steps"), spec.get("onExit"), spec.get("outputs")], separators=(",", ":")
    )


def order(wf: Mapping[str, Any]) -> tuple[str, str]:
    # RFC 3339 in UTC to the second sorts as text; the name breaks ties (schedules name
    # runs by their time, so theirs sort right even within one second).
    meta = wf["metadata"]
    return str(meta.get("creationTimestamp", "")), str(meta["name"])


def previous_run(
    wf: Mapping[str, Any], siblings: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The newest succeeded workflow among ``siblings`` (same namespace and series)
    created before ``wf``."""
    me = order(wf)
    done = [s for s in siblings if s["metadata"].get("uid") != wf["metadata"].get("uid")
            and order(s) < me and (s.get("status") or {}).get("phase") == "Succeeded"]  # fmt: skip
    return max(done, key=order, default=None)


def previous_view(
    prev: Mapping[str, Any] | None, step_tasks: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """What ``{{ previous.* }}`` reads: the run's name, outputs and each step's phase and
    task, with its result where the task still exists (``step_tasks``: by task name)."""
    if prev is None:
        return {"exists": False}
    status = prev.get("status") or {}
    steps: dict[str, Any] = {}
    for st in status.get("steps") or []:
        view: dict[str, Any] = {"phase": st.get("phase", "")}
        if st.get("task"):
            view["task"] = st["task"]
            task = step_tasks.get(st["task"])
            if task is not None:
                view["result"] = (task.get("status") or {}).get("result") or {}
        steps[st["name"]] = view
    return {"exists": True, "name": prev["metadata"]["name"], "steps": steps,
            "outputs": status.get("outputs") or {}}  # fmt: skip
