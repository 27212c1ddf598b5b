"""One pass over one AgentWorkflow: which step tasks to create or cancel, and its status
(pure: the workflow and its step tasks as last seen in, a Plan out).

Level-triggered: everything is derived again from the step tasks each pass. A step's
task name is a function of (workflow UID, step, item index), so a pass repeated after a
crash creates nothing twice (the API server answers AlreadyExists). What no task records
(a step that failed before its task existed, a skipped step, how many items a fan-out
step has) is kept in status.steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.conditions import set_condition
from wallestars_api.lifecycle import parse_ts, ts
from wallestars_api.resources import API_VERSION, GROUP
from wallestars_sdk import secrets as task_secrets

from wallestars_operator.workflows.dag import downstream, graph_problem
from wallestars_operator.workflows.expressions import ExpressionError, condition, render

WORKFLOW_LABEL = f"{GROUP}/workflow"
STEP_LABEL = f"{GROUP}/step"
ITEM_LABEL = f"{GROUP}/item"
KIND = "AgentWorkflow"
FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})
# An AgentTask's phase -> its step's.
TASK_TO_STEP = {"Succeeded": "Succeeded", "PartiallySucceeded": "Succeeded", "Failed": "Failed",
                "TimedOut": "Failed", "Cancelled": "Cancelled"}  # fmt: skip
STEP_DONE = frozenset({"Succeeded", "Failed", "Cancelled", "Skipped"})
MESSAGE_LIMIT = 4000  # the CRD's bounds on status messages


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)  # step AgentTasks
    cancel: list[str] = field(default_factory=list)  # step task names to cancel
    status: dict[str, Any] = field(default_factory=dict)  # the workflow's status as it should be
    events: list[tuple[str, str, bool]] = field(default_factory=list)  # reason, message, warning
    delete: bool = False  # ttlSecondsAfterFinished has passed
    # When each created task's step could start (its dependencies' last end, or the
    # workflow's start): the step start delay metric.
    ready_since: dict[str, datetime] = field(default_factory=dict)


def step_task_name(workflow: str, uid: str, step: str, index: int | None = None) -> str:
    """Deterministic, unique per (workflow UID, step, item), a valid name short enough for
    the attempt names derived from it."""
    ident = f"{uid}/{step}" if index is None else f"{uid}/{step}/{index}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:6]
    stem = f"{workflow[:24].rstrip('-.')}-{step[:20].rstrip('-')}"
    return f"{stem}-{digest}" if index is None else f"{stem}-{index}-{digest}"


def task_view(task: Mapping[str, Any]) -> dict[str, Any]:
    st = task.get("status") or {}
    return {"phase": TASK_TO_STEP.get(st.get("phase", ""), "Running"),
            "task": task["metadata"]["name"], "result": st.get("result") or {},
            "error": st.get("error") or {}, "reason": st.get("reason", "")}  # fmt: skip


def owner(wf: Mapping[str, Any]) -> dict[str, Any]:
    m = wf["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": m["name"], "uid": m["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def fans_out(step: Mapping[str, Any]) -> bool:
    return "withItems" in step or "withResultItems" in step


def step_task(wf: Mapping[str, Any], step: Mapping[str, Any], template: Mapping[str, Any],
              index: int | None = None) -> dict[str, Any]:  # fmt: skip
    m = wf["metadata"]
    labels = {WORKFLOW_LABEL: m["name"][:63].rstrip("-._"), STEP_LABEL: step["name"]}
    if index is not None:
        labels[ITEM_LABEL] = str(index)
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentTask",
        "metadata": {
            "name": step_task_name(m["name"], m["uid"], step["name"], index),
            "namespace": m["namespace"],
            "labels": labels,
            "ownerReferences": [owner(wf)],
        },
        "spec": {k: v for k, v in template.items() if v is not None},
    }


class StepError(Exception):
    """A step that cannot start: why (its message)."""


@dataclass
class Pass:
    """One decision in the making: the workflow, its tasks, and every step's state."""

    wf: Mapping[str, Any]
    tasks: Mapping[str, Mapping[str, Any]]  # the step tasks that exist, by task name
    now: datetime
    previous: Mapping[str, Any] | None = None  # series.previous_view of the last good run
    plan: Plan = field(default_factory=Plan)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def meta(self) -> Mapping[str, Any]:
        meta: Mapping[str, Any] = self.wf["metadata"]
        return meta

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.wf.get("spec") or {}

    def name(self, step: str, index: int | None = None) -> str:
        return step_task_name(self.meta["name"], self.meta["uid"], step, index)

    def instances(self, step: str) -> list[Mapping[str, Any] | None]:
        n = int(self.state[step].get("items", 0))
        return [self.tasks.get(self.name(step, i)) for i in range(n)]

    def observe(self, s: Mapping[str, Any], prior: Mapping[str, Any] | None) -> dict[str, Any]:
        """A step's state from its task(s), or from status where no task records it."""
        name = s["name"]
        if fans_out(s) and prior is not None and "items" in prior:
            st = {"name": name, "items": prior["items"]}
            self.state[name] = st
            phases = [task_view(t)["phase"] if t else "Pending" for t in self.instances(name)]
            st["done"] = sum(1 for p in phases if p in STEP_DONE)
            bad = [i for i, p in enumerate(phases) if p in ("Failed", "Cancelled")]
            policy = self.spec.get("failurePolicy", "FailFast")
            if bad and (policy == "FailFast" or st["done"] == len(phases)):
                t = self.instances(name)[bad[0]] or {}
                msg = (t.get("status") or {}).get("message", "")
                st.update(
                    phase="Failed", message=f"item {bad[0]} failed" + (f": {msg}" if msg else "")
                )
            elif st["done"] == len(phases):
                st["phase"] = "Succeeded"
            else:
                st["phase"] = "Running"
            return st
        task = self.tasks.get(self.name(name))
        if task is not None and not fans_out(s):
            v = task_view(task)
            ts_ = task.get("status") or {}
            st = {"name": name, "phase": v["phase"], "task": v["task"],
                  **{k: ts_[k] for k in ("startTime", "completionTime") if ts_.get(k)}}  # fmt: skip
            if v["phase"] == "Failed" and ts_.get("message"):
                st["message"] = ts_["message"]
            return st
        if prior is not None and prior.get("phase") in ("Failed", "Skipped"):
            return dict(prior)  # decided before any task existed: kept
        return {"name": name, "phase": "Pending"}

    def root(self, item: Any = None, index: int | None = None) -> dict[str, Any]:
        """What expressions see: the steps so far, the workflow, the fan-out's item."""
        steps: dict[str, Any] = {}
        for s in self.spec.get("steps") or []:
            n = s["name"]
            st = self.state.get(n, {})
            if fans_out(s) and "items" in st:
                ts_ = [t for t in self.instances(n) if t]
                views = [task_view(t) for t in ts_]
                steps[n] = {"phase": st["phase"], "tasks": [v["task"] for v in views],
                            "results": [(v["result"] or {}).get("data") for v in views]}  # fmt: skip
            elif (t := self.tasks.get(self.name(n))) is not None:
                steps[n] = task_view(t)
            elif st:
                steps[n] = {"phase": st["phase"]}
        out: dict[str, Any] = {"steps": steps, "workflow": {"name": self.meta["name"],
               "namespace": self.meta["namespace"], "uid": self.meta["uid"]},
               "previous": self.previous or {"exists": False}}  # fmt: skip
        if index is not None:
            out |= {"item": item, "itemIndex": index}
        return out

    def running_tasks(self) -> list[str]:
        out: list[str] = []
        for s in self.spec.get("steps") or []:
            st = self.state[s["name"]]
            if "items" in st:  # a failed fan-out step may still have items running
                out += [t["metadata"]["name"] for t in self.instances(s["name"])
                        if t and task_view(t)["phase"] == "Running"]  # fmt: skip
            elif st["phase"] == "Running" and "task" in st:
                out.append(st["task"])
        return out

    def template(self, s: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
        """The step's AgentTask spec with its expressions evaluated; StepError if one
        cannot be, or if the payload names a Secret."""
        n = s["name"]
        try:
            t: dict[str, Any] = render(dict(s.get("template") or {}), root)
        except ExpressionError as e:
            raise StepError(f"spec.steps[{n}].template: {e}") from e
        if refs := task_secrets.references(t.get("payload") or {}):
            # The operator would create the task, so the admission policy would check the
            # operator's right to the Secret, not the workflow author's.
            raise StepError(f"spec.steps[{n}].template.payload names Secret {refs[0][0]}: "
                            "Secrets by reference are not supported in workflow steps")  # fmt: skip
        return t

    def start(self, s: Mapping[str, Any]) -> None:
        """A step whose dependencies are met: skipped by `when`, or its first task(s)."""
        n, st = s["name"], self.state[s["name"]]
        root = self.root()
        if "when" in s:
            try:
                go = condition(s["when"], root)
            except ExpressionError as e:
                raise StepError(f"spec.steps[{n}].when: {e}") from e
            if not go:
                st.update(phase="Skipped", message=f"when was false: {s['when']}", condition=False)
                return
        if fans_out(s):
            items = s.get("withItems")
            if items is None:
                try:
                    items = render(s["withResultItems"], root)
                except ExpressionError as e:
                    raise StepError(f"spec.steps[{n}].withResultItems: {e}") from e
            if not isinstance(items, list):
                raise StepError(
                    f"spec.steps[{n}].withResultItems must give a list, not {type(items).__name__}"
                )
            st.update(items=len(items), done=0, phase="Running" if items else "Succeeded",
                      itemValues=items)  # fmt: skip
            self.more(s)
            return
        t = self.template(s, root)
        self.plan.create.append(step_task(self.wf, s, t))
        self.plan.ready_since[self.plan.create[-1]["metadata"]["name"]] = self.ready_since(s)
        st.update(phase="Running", task=self.plan.create[-1]["metadata"]["name"])
        self.plan.events.append(("StepCreated", f"step {n}: AgentTask {st['task']}", False))

    def more(self, s: Mapping[str, Any]) -> None:
        """A fan-out step's next instances, up to its parallelism."""
        n, st = s["name"], self.state[s["name"]]
        items = st.pop("itemValues", None)
        if items is None:
            items = self.items_of(s)
        existing = self.instances(n)
        running = sum(1 for t in existing if t and task_view(t)["phase"] == "Running")
        room = int(s.get("parallelism") or len(existing) or 1) - running
        for i, t in enumerate(existing):
            if room <= 0:
                break
            if t is None:
                tmpl = self.template(s, self.root(items[i], i))
                self.plan.create.append(step_task(self.wf, s, tmpl, i))
                self.plan.ready_since[self.plan.create[-1]["metadata"]["name"]] = self.ready_since(
                    s
                )
                room -= 1
        if self.plan.create and s["name"] in {
            c["metadata"]["labels"][STEP_LABEL] for c in self.plan.create
        }:
            self.plan.events.append(("StepCreated", f"step {n}: {st['items']} items", False))

    def ready_since(self, s: Mapping[str, Any]) -> datetime:
        """The latest end among the step's dependencies, else the workflow's start."""
        ends = [end for d in s.get("dependsOn") or [] for t in self.step_tasks(d)
                if (end := parse_ts((t.get("status") or {}).get("completionTime")))]  # fmt: skip
        start = parse_ts((self.wf.get("status") or {}).get("startTime")) or self.now
        return max(ends, default=start)

    def step_tasks(self, step: str) -> list[Mapping[str, Any]]:
        if "items" in self.state.get(step, {}):
            return [t for t in self.instances(step) if t]
        t = self.tasks.get(self.name(step))
        return [t] if t else []

    def items_of(self, s: Mapping[str, Any]) -> list[Any]:
        if "withItems" in s:
            return list(s["withItems"])
        try:  # stable: the steps it reads have finished
            items = render(s["withResultItems"], self.root())
        except ExpressionError as e:
            raise StepError(f"spec.steps[{s['name']}].withResultItems: {e}") from e
        return list(items) if isinstance(items, list) else []


def decide(wf: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]], now: datetime,
           previous: Mapping[str, Any] | None = None) -> Plan:  # fmt: skip
    """``tasks``: the workflow's step tasks that exist, by task name; ``previous``: what
    ``{{ previous }}`` reads (series.previous_view), if the workflow reads it."""
    spec = wf.get("spec") or {}
    old = dict(wf.get("status") or {})
    steps: list[dict[str, Any]] = list(spec.get("steps") or [])
    p = Pass(wf, tasks, now, previous)
    phase = old.get("phase", "")
    if phase in FINISHED:
        p.plan.status = old
        done_at = parse_ts(old.get("completionTime"))
        ttl = spec.get("ttlSecondsAfterFinished")
        p.plan.delete = (
            ttl is not None and done_at is not None and now >= done_at + timedelta(seconds=ttl)
        )
        return p.plan

    status: dict[str, Any] = {k: v for k, v in old.items() if k != "steps"}
    status.setdefault("startTime", ts(now))
    status["observedGeneration"] = wf["metadata"].get("generation", 0)
    if problem := graph_problem(steps):
        return finish(p, status, steps, "Failed", "InvalidWorkflow", problem)

    prior = {s["name"]: s for s in old.get("steps") or []}
    for s in steps:
        p.state[s["name"]] = p.observe(s, prior.get(s["name"]))
    deps = {s["name"]: list(s.get("dependsOn") or []) for s in steps}

    def stop(phase: str, reason: str, message: str) -> Plan:
        p.plan.cancel = [n for n in p.running_tasks()
                         if not ((p.tasks.get(n) or {}).get("spec") or {}).get("cancel")]  # fmt: skip
        for st in p.state.values():
            if st["phase"] == "Pending":
                st.update(phase="Skipped", message=message)
        return conclude(p, status, steps, phase, reason, message)

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
    fail_fast = spec.get("failurePolicy", "FailFast") == "FailFast"

    def failed_first() -> str | None:
        return next(
            (n for n, st in p.state.items() if st["phase"] in ("Failed", "Cancelled")), None
        )

    def fail_fast_stop(first: str) -> Plan:
        st = p.state[first]
        return stop("Failed", "StepFailed", f"step {first} {st['phase'].lower()}"
                    + (f": {st['message']}" if st.get("message") else ""))  # fmt: skip

    if fail_fast and (first := failed_first()):
        return fail_fast_stop(first)

    def satisfied(d: str) -> bool:  # a step skipped by its `when` lets its dependents run
        st = p.state[d]
        return st["phase"] == "Succeeded" or (
            st["phase"] == "Skipped" and st.get("condition") is False
        )

    if not spec.get("suspend"):
        for s in steps:  # in order; a step started here lets a later one see its state
            n, st = s["name"], p.state[s["name"]]
            try:
                if st["phase"] == "Running" and "items" in st:
                    p.more(s)
                elif st["phase"] == "Pending" and all(satisfied(d) for d in deps[n]):
                    p.start(s)
            except StepError as e:
                st.update(phase="Failed", message=str(e))
                st.pop("task", None)
                p.plan.events.append(("StepFailed", f"step {n}: {e}", True))
                if fail_fast:
                    p.plan.create = [
                        c for c in p.plan.create if c["metadata"]["labels"][STEP_LABEL] != n
                    ]
    if fail_fast and (first := failed_first()):
        # Nothing is created in a pass that fails the workflow.
        made = {c["metadata"]["name"] for c in p.plan.create}
        for st in p.state.values():
            if st.get("task") in made:
                st["phase"] = "Pending"
                del st["task"]
            if "items" in st and st["phase"] == "Running" and not any(p.instances(st["name"])):
                st["phase"] = "Pending"
                del st["items"]
        p.plan.create = []
        p.plan.events = [e for e in p.plan.events if e[0] != "StepCreated"]
        return fail_fast_stop(first)
    # Continue: what depends on a failed step (or one skipped for it) cannot run.
    blocked_roots = {n for n, st in p.state.items() if st["phase"] in ("Failed", "Cancelled")
                     or (st["phase"] == "Skipped" and st.get("condition") is not False)}  # fmt: skip
    for n in downstream(deps, blocked_roots):
        if p.state[n]["phase"] == "Pending":
            bad = next(d for d in deps[n] if not satisfied(d))
            p.state[n].update(phase="Skipped", message=f"step {bad} did not succeed")

    if all(st["phase"] in STEP_DONE for st in p.state.values()):
        bad = [n for n, st in p.state.items() if st["phase"] in ("Failed", "Cancelled")]
        if bad or blocked_roots:
            return conclude(p, status, steps, "Failed", "StepFailed",
                          f"steps that did not succeed: {', '.join(bad)}")  # fmt: skip
        outs, why = outputs(spec, p.root())
        if outs:
            status["outputs"] = outs
        if why:
            return conclude(p, status, steps, "Failed", "OutputFailed", why)
        return conclude(p, status, steps, "Succeeded", "Succeeded", f"all {len(steps)} steps done")
    running = p.running_tasks()
    new_phase = (
        "Suspended" if spec.get("suspend") and not running and not p.plan.create else "Running"
    )
    if new_phase != phase:
        p.plan.events.append((new_phase, f"workflow {new_phase.lower()}", False))
    status.update(phase=new_phase, reason=new_phase, message=progress_text(p.state),
                  active=",".join(n for n, st in p.state.items() if st["phase"] == "Running"))  # fmt: skip
    return with_steps(p, status, steps)


def with_steps(p: Pass, status: dict[str, Any], steps: list[dict[str, Any]]) -> Plan:
    if p.state:
        for st in p.state.values():
            st.pop("itemValues", None)
            if "message" in st:
                st["message"] = str(st["message"])[:MESSAGE_LIMIT]
        status["steps"] = [p.state[s["name"]] for s in steps]
        status["progress"] = progress_text(p.state, short=True)
    status["conditions"] = conditions(status, ts(p.now), p.meta.get("generation"))
    p.plan.status = status
    return p.plan


def conditions(status: Mapping[str, Any], now: str, generation: int | None) -> list[dict[str, Any]]:
    """Running, Suspended and (once finished) Succeeded, as a Job's conditions say it:
    from the phase just decided, transition times kept while a status holds."""
    phase, reason, message = (
        status.get("phase", ""),
        status.get("reason", ""),
        status.get("message", ""),
    )
    conds = list(status.get("conditions") or [])
    running = phase == "Running"
    conds = set_condition(conds, "Running", running, reason if running else phase or "Pending",
                          message, now, generation)  # fmt: skip
    conds = set_condition(conds, "Suspended", phase == "Suspended",
                          "Suspended" if phase == "Suspended" else "NotSuspended",
                          "spec.suspend: no step starts" if phase == "Suspended" else "", now, generation)  # fmt: skip
    if phase in FINISHED:
        conds = set_condition(
            conds, "Succeeded", phase == "Succeeded", reason, message, now, generation
        )
    return conds


def progress_text(state: Mapping[str, Mapping[str, Any]], short: bool = False) -> str:
    done = sum(1 for s in state.values() if s["phase"] in STEP_DONE)
    if short:
        return f"{done}/{len(state)}"
    running = sum(1 for s in state.values() if s["phase"] == "Running")
    return f"{done} of {len(state)} steps done, {running} running"


ON_EXIT = "on-exit"  # the onExit step's name (a step of the workflow may not take it)


def conclude(p: Pass, status: dict[str, Any], steps: list[dict[str, Any]], phase: str,
             reason: str, message: str) -> Plan:  # fmt: skip
    """The steps are over with this outcome: finish, or first run the onExit step (it
    sees the outcome as {{ workflow.phase }}, .reason, .message). A failed onExit fails a
    workflow that had succeeded; the outcome is decided again each pass, so it is stable."""
    template = (p.spec.get("onExit") or {}).get("template")
    if not template:
        return finish(p, status, steps, phase, reason, message)
    outcome = {"phase": phase, "reason": reason, "message": message[:MESSAGE_LIMIT]}
    name = p.name(ON_EXIT)
    task = p.tasks.get(name)
    if task is None:
        root = p.root()
        root["workflow"] |= outcome
        try:
            t = render(dict(template), root)
        except ExpressionError as e:
            return finish(p, status, steps, "Failed", "OnExitFailed", f"spec.onExit.template: {e}")
        if task_secrets.references(t.get("payload") or {}):
            return finish(p, status, steps, "Failed", "OnExitFailed",
                          "spec.onExit.template.payload names a Secret: not supported in workflows")  # fmt: skip
        p.plan.create.append(step_task(p.wf, {"name": ON_EXIT}, t))
        p.plan.ready_since[name] = p.now
        p.plan.events.append(("OnExit", f"steps ended {phase}: running onExit ({name})", False))
        state = "Running"
    else:
        state = task_view(task)["phase"]
    status["onExit"] = {"phase": state, "task": name}
    if state == "Running":
        status.update(phase="Running", reason="OnExit", message=f"{message[:MESSAGE_LIMIT - 40]}; running onExit",
                      active=ON_EXIT, outcome=outcome)  # fmt: skip
        return with_steps(p, status, steps)
    status.pop("outcome", None)
    if state != "Succeeded" and phase == "Succeeded":
        phase, reason, message = (
            "Failed",
            "OnExitFailed",
            f"the steps succeeded; onExit {state.lower()}",
        )
    return finish(p, status, steps, phase, reason, message)


def finish(p: Pass, status: dict[str, Any], steps: list[dict[str, Any]], phase: str,
           reason: str, message: str) -> Plan:  # fmt: skip
    status.update(phase=phase, reason=reason, message=message[:MESSAGE_LIMIT],
                  completionTime=ts(p.now), active="")  # fmt: skip
    p.plan.events.append((phase, message[:MESSAGE_LIMIT], phase != "Succeeded"))
    return with_steps(p, status, steps)


def outputs(spec: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The workflow's declared outputs from its steps' results, or why one cannot be had."""
    out: dict[str, Any] = {}
    for name, expr in (spec.get("outputs") or {}).items():
        try:
            out[name] = render(expr, root)
        except ExpressionError as e:
            return out, f"spec.outputs.{name}: {e}"
    return out, None
