"""One pass over one AgentWorkflow: which step tasks to create or cancel, and its status
(pure: the workflow and its step tasks as last seen in, a Plan out).

Level-triggered: everything is derived again from the step tasks each pass. A step's
task name is a function of (workflow UID, step), so a pass repeated after a crash
creates nothing twice (the API server answers AlreadyExists). What no task records (a
step that failed before its task existed, a skipped step) is kept in status.steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import parse_ts, ts
from wallestars_api.resources import API_VERSION, GROUP
from wallestars_sdk import secrets as task_secrets

from wallestars_operator.workflows.dag import downstream, graph_problem
from wallestars_operator.workflows.expressions import ExpressionError, render

WORKFLOW_LABEL = f"{GROUP}/workflow"
STEP_LABEL = f"{GROUP}/step"
KIND = "AgentWorkflow"
FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})
# An AgentTask's phase -> its step's.
TASK_TO_STEP = {"Succeeded": "Succeeded", "PartiallySucceeded": "Succeeded", "Failed": "Failed",
                "TimedOut": "Failed", "Cancelled": "Cancelled"}  # fmt: skip
STEP_DONE = frozenset({"Succeeded", "Failed", "Cancelled", "Skipped"})


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)  # step AgentTasks
    cancel: list[str] = field(default_factory=list)  # step task names to cancel
    status: dict[str, Any] = field(default_factory=dict)  # the workflow's status as it should be
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # reason, message, warning
    delete: bool = False  # ttlSecondsAfterFinished has passed


def step_task_name(workflow: str, uid: str, step: str) -> str:
    """Deterministic, unique per (workflow UID, step), a valid name short enough for the
    attempt names derived from it."""
    digest = hashlib.sha256(f"{uid}/{step}".encode()).hexdigest()[:6]
    return f"{workflow[:24].rstrip('-.')}-{step[:20].rstrip('-')}-{digest}"


def step_view(task: Mapping[str, Any]) -> dict[str, Any]:
    """What expressions see of a step: its phase, its task and the task's outcome."""
    st = task.get("status") or {}
    return {"phase": TASK_TO_STEP.get(st.get("phase", ""), "Running"),
            "task": task["metadata"]["name"], "result": st.get("result") or {},
            "error": st.get("error") or {}, "reason": st.get("reason", "")}  # fmt: skip


def owner(wf: Mapping[str, Any]) -> dict[str, Any]:
    m = wf["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": m["name"], "uid": m["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def step_task(wf: Mapping[str, Any], step: Mapping[str, Any], payload: Any) -> dict[str, Any]:
    m = wf["metadata"]
    spec = {k: v for k, v in (step.get("template") or {}).items() if v is not None}
    spec["payload"] = payload
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentTask",
        "metadata": {
            "name": step_task_name(m["name"], m["uid"], step["name"]),
            "namespace": m["namespace"],
            "labels": {WORKFLOW_LABEL: m["name"][:63].rstrip("-._"), STEP_LABEL: step["name"]},
            "ownerReferences": [owner(wf)],
        },
        "spec": spec,
    }


def decide(wf: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]], now: datetime) -> Plan:
    """``tasks``: the step tasks that exist, by step name."""
    meta, spec = wf["metadata"], wf.get("spec") or {}
    old = dict(wf.get("status") or {})
    steps: list[dict[str, Any]] = list(spec.get("steps") or [])
    plan = Plan()
    phase = old.get("phase", "")
    if phase in FINISHED:
        plan.status = old
        done_at = parse_ts(old.get("completionTime"))
        ttl = spec.get("ttlSecondsAfterFinished")
        plan.delete = (
            ttl is not None and done_at is not None and now >= done_at + timedelta(seconds=ttl)
        )
        return plan

    status: dict[str, Any] = {k: v for k, v in old.items() if k not in ("steps",)}
    status.setdefault("startTime", ts(now))
    status["observedGeneration"] = meta.get("generation", 0)

    if problem := graph_problem(steps):
        return finish(plan, status, steps, {}, "Failed", "InvalidWorkflow", problem, now)

    prior = {s["name"]: s for s in old.get("steps") or []}
    state: dict[str, dict[str, Any]] = {}
    for s in steps:
        name = s["name"]
        task = tasks.get(name)
        if task is not None:
            v = step_view(task)
            st = task.get("status") or {}
            state[name] = {"name": name, "phase": v["phase"], "task": v["task"],
                           **{k: st[k] for k in ("startTime", "completionTime") if st.get(k)},
                           **({"message": st["message"]} if v["phase"] == "Failed" and st.get("message") else {})}  # fmt: skip
        elif prior.get(name, {}).get("phase") in ("Failed", "Skipped"):
            state[name] = dict(prior[name])  # decided before any task existed: kept
        else:
            state[name] = {"name": name, "phase": "Pending"}
    running = [s["task"] for s in state.values() if s["phase"] == "Running"]
    deps = {s["name"]: list(s.get("dependsOn") or []) for s in steps}

    def stop(phase: str, reason: str, message: str) -> Plan:
        plan.cancel = running
        for s in state.values():
            if s["phase"] == "Pending":
                s.update(phase="Skipped", message=message)
        return finish(plan, status, steps, state, phase, reason, message, now)

    if spec.get("cancel"):
        return stop("Cancelled", "Cancelled", "the workflow was cancelled (spec.cancel)")
    deadline = spec.get("deadlineSeconds")
    started = parse_ts(status["startTime"])
    if (
        deadline is not None
        and started is not None
        and now >= started + timedelta(seconds=deadline)
    ):
        return stop("Failed", "DeadlineExceeded",
                    f"the workflow did not finish within deadlineSeconds ({deadline})")  # fmt: skip

    failed = [n for n, s in state.items() if s["phase"] in ("Failed", "Cancelled")]
    if failed and spec.get("failurePolicy", "FailFast") == "FailFast":
        first = failed[0]
        return stop("Failed", "StepFailed", f"step {first} {state[first]['phase'].lower()}"
                    + (f": {state[first]['message']}" if state[first].get("message") else ""))  # fmt: skip
    # Continue: what depends on a failed or skipped step cannot run; the rest goes on.
    blocked = downstream(
        deps, set(failed) | {n for n, s in state.items() if s["phase"] == "Skipped"}
    )
    for n in blocked:
        if state[n]["phase"] == "Pending":
            bad = next(d for d in deps[n] if state[d]["phase"] != "Succeeded")
            state[n].update(phase="Skipped", message=f"step {bad} did not succeed")

    root = {"steps": {n: step_view(t) for n, t in tasks.items()},
            "workflow": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}  # fmt: skip
    if not spec.get("suspend"):
        for s in steps:
            n = s["name"]
            if state[n]["phase"] != "Pending" or any(
                state[d]["phase"] != "Succeeded" for d in deps[n]
            ):
                continue
            payload = (s.get("template") or {}).get("payload") or {}
            try:
                rendered = render(payload, root)
            except ExpressionError as e:
                state[n].update(phase="Failed", message=f"spec.steps[{n}].template.payload: {e}")
                plan.events.append(("StepFailed", f"step {n}: {e}", True))
                continue
            if refs := task_secrets.references(rendered):
                # The operator would create the task, so the API server would check the
                # operator's right to the Secret, not the workflow author's.
                state[n].update(phase="Failed", message=(
                    f"spec.steps[{n}].template.payload names Secret {refs[0][0]}: Secrets by "
                    "reference are not supported in workflow steps"))  # fmt: skip
                continue
            plan.create.append(step_task(wf, s, rendered))
            state[n].update(phase="Running", task=plan.create[-1]["metadata"]["name"])
            plan.events.append(("StepCreated", f"step {n}: AgentTask {state[n]['task']}", False))

    if spec.get("failurePolicy", "FailFast") == "FailFast" and any(
        s["phase"] == "Failed" for s in state.values()
    ):  # a step failed while being rendered this pass
        first = next(n for n, s in state.items() if s["phase"] == "Failed")
        made = {c["metadata"]["name"] for c in plan.create}
        for st_ in state.values():  # nothing is created in a pass that fails the workflow
            if st_.get("task") in made:
                st_["phase"] = "Pending"
                del st_["task"]
        running = [st_["task"] for st_ in state.values() if st_["phase"] == "Running"]
        plan.events = [e for e in plan.events if e[0] != "StepCreated"]
        plan.create = []
        return stop(
            "Failed", "StepFailed", f"step {first} failed: {state[first].get('message', '')}"
        )
    if all(s["phase"] in STEP_DONE for s in state.values()):
        if any(s["phase"] in ("Failed", "Cancelled", "Skipped") for s in state.values()):
            bad = [n for n, s in state.items() if s["phase"] in ("Failed", "Cancelled")]
            return finish(plan, status, steps, state, "Failed", "StepFailed",
                          f"steps that did not succeed: {', '.join(bad)}", now)  # fmt: skip
        outs, why = outputs(spec, root)
        if outs:
            status["outputs"] = outs
        if why:
            return finish(plan, status, steps, state, "Failed", "OutputFailed", why, now)
        return finish(plan, status, steps, state, "Succeeded", "Succeeded",
                      f"all {len(steps)} steps succeeded", now)  # fmt: skip
    new_phase = (
        "Suspended" if spec.get("suspend") and not running and not plan.create else "Running"
    )
    if new_phase != phase:
        plan.events.append((new_phase, f"workflow {new_phase.lower()}", False))
    status.update(phase=new_phase, reason=new_phase, message=progress_text(state))
    status.update(
        steps=[state[s["name"]] for s in steps], progress=progress_text(state, short=True)
    )
    plan.status = status
    return plan


def progress_text(state: Mapping[str, Mapping[str, Any]], short: bool = False) -> str:
    done = sum(1 for s in state.values() if s["phase"] in STEP_DONE)
    if short:
        return f"{done}/{len(state)}"
    running = sum(1 for s in state.values() if s["phase"] == "Running")
    return f"{done} of {len(state)} steps done, {running} running"


def finish(plan: Plan, status: dict[str, Any], steps: list[dict[str, Any]],
           state: dict[str, dict[str, Any]], phase: str, reason: str, message: str,
           now: datetime) -> Plan:  # fmt: skip
    status.update(phase=phase, reason=reason, message=message[:4000], completionTime=ts(now),
                  active="")  # fmt: skip
    if state:
        for s in state.values():  # status bounds (the CRD's maxLength)
            if "message" in s:
                s["message"] = str(s["message"])[:4000]
        status["steps"] = [state[s["name"]] for s in steps]
        status["progress"] = progress_text(state, short=True)
    plan.events.append((phase, message, phase != "Succeeded"))
    plan.status = status
    return plan


def outputs(spec: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The workflow's declared outputs from its steps' results, or why one cannot be had."""
    out: dict[str, Any] = {}
    for name, expr in (spec.get("outputs") or {}).items():
        try:
            out[name] = render(expr, root)
        except ExpressionError as e:
            return out, f"spec.outputs.{name}: {e}"
    return out, None
