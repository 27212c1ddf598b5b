"""AgentWorkflows end to end: the real control plane, the operator and webhook service as
processes, the test cloud function on loopback (tests/agents/http_function.py: a step's
payload.data.out comes back as its result.data.out)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Kubectl, OperatorProcess, http_agent, wait_for

pytestmark = pytest.mark.cluster
WF = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow"}


def step(name: str, out: Any = None, after: tuple[str, ...] = (), **data: Any) -> dict[str, Any]:
    payload = {"data": {**({"out": out} if out is not None else {}), **data}}
    return {"name": name, **({"dependsOn": list(after)} if after else {}),
            "template": {"agentRef": "fn", "type": "custom", "payload": payload,
                         "retries": {"limit": 0}}}  # fmt: skip


def finished(kubectl: Kubectl, name: str, timeout: float = 90) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def done() -> Any:
        last.update(kubectl.json("get", "agentworkflow", name).get("status") or {})
        return last if last.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    try:
        return dict(wait_for(f"workflow {name} to finish", done, timeout=timeout))
    except AssertionError as e:
        raise AssertionError(f"{e}: {last}") from None


def step_tasks(kubectl: Kubectl, wf: str) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "agenttasks", "-l", f"agents.wallestars.io/workflow={wf}")["items"]
    return {t["metadata"]["labels"]["agents.wallestars.io/step"]: t for t in items}


def test_a_diamond_passes_results_from_step_to_step(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    kubectl.apply({**WF, "metadata": {"name": "diamond"}, "spec": {
        "steps": [step("health", {"version": "2.4.1", "items": [1, 2, 3]}),
                  step("b", "{{ steps.health.result.data.out.version }}", ("health",)),
                  step("c", {"n": "{{ steps.health.result.data.out.items[2] }}"}, ("health",)),
                  step("d", "b={{ steps.b.result.data.out }} c={{ steps.c.result.data.out.n }}", ("b", "c"))],
        "outputs": {"summary": "{{ steps.d.result.data.out }}", "n": "{{ steps.c.result.data.out.n }}"}}})  # fmt: skip
    st = finished(kubectl, "diamond")
    assert st["phase"] == "Succeeded", st
    assert st["outputs"] == {"summary": "b=2.4.1 c=3", "n": 3}  # 3 stays a number
    assert st["progress"] == "4/4" and [s["phase"] for s in st["steps"]] == ["Succeeded"] * 4
    tasks = step_tasks(kubectl, "diamond")
    assert set(tasks) == {"health", "b", "c", "d"}
    uid = kubectl.json("get", "agentworkflow", "diamond")["metadata"]["uid"]
    for name, t in tasks.items():
        (ref,) = t["metadata"]["ownerReferences"]
        assert ref["kind"] == "AgentWorkflow" and ref["uid"] == uid and ref["controller"]
        assert {s["name"]: s["task"] for s in st["steps"]}[name] == t["metadata"]["name"]
    # d started only after both of its dependencies had finished.
    d_created = tasks["d"]["metadata"]["creationTimestamp"]
    assert all(tasks[x]["status"]["completionTime"] <= d_created for x in ("b", "c"))
    assert tasks["b"]["spec"]["payload"]["data"]["out"] == "2.4.1"
    columns = kubectl("get", "agentworkflow", "diamond")
    assert "PROGRESS" in columns and "Succeeded" in columns and "4/4" in columns


def test_fail_fast_cancels_the_running_step_and_skips_the_rest(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    kubectl.apply({**WF, "metadata": {"name": "ff"}, "spec": {"steps": [
        step("bad", behaviour="fail"), step("slow", behaviour="slow"),
        step("after", None, ("bad",))]}})  # fmt: skip
    st = finished(kubectl, "ff")
    assert st["phase"] == "Failed" and st["reason"] == "StepFailed", st
    assert st["message"].startswith("step bad failed")
    phases = {s["name"]: s["phase"] for s in st["steps"]}
    assert phases["bad"] == "Failed" and phases["after"] == "Skipped"
    tasks = step_tasks(kubectl, "ff")
    assert "after" not in tasks  # never created
    assert tasks["slow"]["spec"]["cancel"] is True
    wait_for("the slow step to be cancelled", lambda: (kubectl.json(
        "get", "agenttask", tasks["slow"]["metadata"]["name"]).get("status") or {}).get("phase") == "Cancelled",
        timeout=30)  # fmt: skip


def test_continue_finishes_the_independent_branch(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    kubectl.apply({**WF, "metadata": {"name": "cont"}, "spec": {"failurePolicy": "Continue", "steps": [
        step("bad", behaviour="fail"), step("after", None, ("bad",)),
        step("other", "fine"), step("last", "{{ steps.other.result.data.out }}", ("other",))]}})  # fmt: skip
    st = finished(kubectl, "cont")
    phases = {s["name"]: s["phase"] for s in st["steps"]}
    assert phases == {
        "bad": "Failed",
        "after": "Skipped",
        "other": "Succeeded",
        "last": "Succeeded",
    }
    assert st["phase"] == "Failed" and st["message"] == "steps that did not succeed: bad"


def test_a_missing_result_fails_the_step_that_needs_it(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    kubectl.apply({**WF, "metadata": {"name": "missing"}, "spec": {"steps": [
        step("login", {"user": "ada"}),
        step("use", "{{ steps.login.result.data.out.token }}", ("login",))]}})  # fmt: skip
    st = finished(kubectl, "missing")
    assert st["phase"] == "Failed", st
    assert (
        "steps.login.result.data.out.token: no 'token' in steps.login.result.data.out"
        in st["message"]
    )
    assert set(step_tasks(kubectl, "missing")) == {"login"}


def test_the_api_server_refuses_a_bad_graph_and_a_cycle_fails_at_once(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    def refused(steps: list[dict[str, Any]]) -> str:
        out = kubectl.run("apply", "-f", "-", input=json.dumps(
            {**WF, "metadata": {"name": "bad-graph"}, "spec": {"steps": steps}}), check=False)  # fmt: skip
        assert out.returncode != 0
        return out.stderr

    assert "step names must be unique" in refused([step("a"), step("a")])
    assert "must be a step of this workflow" in refused([step("a", None, ("nope",))])
    assert "cannot depend on itself" in refused([step("a", None, ("a",))])
    kubectl.apply({**WF, "metadata": {"name": "cycle"}, "spec": {"steps": [
        step("a", None, ("c",)), step("b", None, ("a",)), step("c", None, ("b",))]}})  # fmt: skip
    st = finished(kubectl, "cycle", timeout=30)
    assert st["phase"] == "Failed" and st["reason"] == "InvalidWorkflow"
    assert st["message"] == "the steps depend on each other in a cycle: a -> c -> b -> a"
    assert step_tasks(kubectl, "cycle") == {}


def test_a_pipeline_fans_out_over_a_result_with_parallelism_then_aggregates(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    items = [{"id": i, "name": f"item {i}"} for i in range(7)]
    each = step("each", "{{ item.name }}", ("list",))
    each |= {"withResultItems": "{{ steps.list.result.data.out }}", "parallelism": 3}
    kubectl.apply({**WF, "metadata": {"name": "pipeline"}, "spec": {"steps": [
        step("list", items), each, step("sum", "{{ steps.each.results }}", ("each",))],
        "outputs": {"all": "{{ steps.sum.result.data.out }}"}}})  # fmt: skip
    st = finished(kubectl, "pipeline", timeout=120)
    assert st["phase"] == "Succeeded", st
    assert [r["out"] for r in st["outputs"]["all"]] == [f"item {i}" for i in range(7)]
    tasks = kubectl.json("get", "agenttasks", "-l", "agents.wallestars.io/step=each")["items"]
    assert sorted(int(t["metadata"]["labels"]["agents.wallestars.io/item"]) for t in tasks) == list(
        range(7)
    )
    # Never more than 3 at once: each item task started after all but 2 earlier ones ended.
    # (A cloud task's start is its dispatch: the function's 202.)
    spans = sorted(((t["status"].get("startTime") or t["status"]["dispatchTime"]), t["status"]["completionTime"])
                   for t in tasks)  # fmt: skip
    for start, _ in spans:
        overlapping = [s for s in spans if s[0] <= start < s[1]]
        assert len(overlapping) <= 3, (start, overlapping)
    assert {s["name"]: s for s in st["steps"]}["each"]["items"] == 7


def test_a_matrix_over_two_agents_and_a_when_that_skips(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)  # the other steps'
    http_agent(kubectl, function_url, name="fn-a")
    http_agent(kubectl, function_url, name="fn-b")
    matrix = {"name": "matrix", "withItems": ["fn-a", "fn-b"], "template": {
        "agentRef": "{{ item }}", "type": "custom", "payload": {"data": {"out": "ran on {{ item }}"}}}}  # fmt: skip
    skip = step("deploy", "deployed", ("matrix",)) | {
        "when": "{{ steps.matrix.results[0].out }} == nope"
    }
    kubectl.apply({**WF, "metadata": {"name": "matrix"}, "spec": {"steps": [
        matrix, skip, step("after", "after", ("deploy",))]}})  # fmt: skip
    st = finished(kubectl, "matrix")
    assert st["phase"] == "Succeeded", st
    phases = {s["name"]: s["phase"] for s in st["steps"]}
    assert phases == {"matrix": "Succeeded", "deploy": "Skipped", "after": "Succeeded"}
    tasks = kubectl.json("get", "agenttasks", "-l", "agents.wallestars.io/step=matrix")["items"]
    assert sorted(t["status"]["agent"] for t in tasks) == ["fn-a", "fn-b"]
    assert sorted(t["status"]["result"]["data"]["out"] for t in tasks) == [
        "ran on fn-a",
        "ran on fn-b",
    ]


def test_on_exit_runs_after_a_failed_step_with_the_outcome(
    operator: OperatorProcess, function_url: str, kubectl: Kubectl
) -> None:
    http_agent(kubectl, function_url)
    kubectl.apply({**WF, "metadata": {"name": "cleanup"}, "spec": {
        "steps": [step("bad", behaviour="fail")],
        "onExit": {"template": {"agentRef": "fn", "type": "custom", "payload": {
            "data": {"out": "{{ workflow.phase }} {{ workflow.reason }}"}}}}}})  # fmt: skip
    st = finished(kubectl, "cleanup")
    assert st["phase"] == "Failed" and st["reason"] == "StepFailed", st
    assert st["onExit"]["phase"] == "Succeeded"
    exit_task = kubectl.json("get", "agenttask", st["onExit"]["task"])
    assert exit_task["status"]["result"]["data"]["out"] == "Failed StepFailed"
    assert exit_task["metadata"]["labels"]["agents.wallestars.io/step"] == "on-exit"
