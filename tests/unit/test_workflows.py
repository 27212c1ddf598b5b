"""AgentWorkflows: the graph, expressions over earlier steps, and one pass's decisions."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wallestars_api.lifecycle import ts
from wallestars_operator.workflows.dag import downstream, find_cycle, graph_problem
from wallestars_operator.workflows.decide import (
    STEP_LABEL,
    WORKFLOW_LABEL,
    decide,
    step_task_name,
)
from wallestars_operator.workflows.expressions import ExpressionError, parse_path, render
from wallestars_operator.workflows.series import (
    SERIES_LABEL,
    previous_run,
    previous_view,
    reads_previous,
    series_of,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_graph_problems_name_what_is_wrong() -> None:
    assert graph_problem([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}]) is None
    assert graph_problem([{"name": "a"}, {"name": "a"}]) == "two steps are named 'a'"
    assert "depends on 'x', which is not a step" in (
        graph_problem([{"name": "a", "dependsOn": ["x"]}]) or ""
    )
    both = {"name": "a", "withItems": [1], "withResultItems": "{{ steps.b.results }}"}
    assert "sets both withItems and withResultItems" in (graph_problem([both]) or "")
    assert "depends on itself" in (graph_problem([{"name": "a", "dependsOn": ["a"]}]) or "")
    cyc = graph_problem([{"name": "a", "dependsOn": ["c"]}, {"name": "b", "dependsOn": ["a"]},
                         {"name": "c", "dependsOn": ["b"]}, {"name": "d"}])  # fmt: skip
    assert cyc == "the steps depend on each other in a cycle: a -> c -> b -> a"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=3),
                       min_size=1))  # fmt: skip
def test_a_cycle_found_is_a_real_cycle_and_none_means_a_topological_order_exists(
    raw: dict[str, list[str]],
) -> None:
    deps = {n: [d for d in ds if d in raw] for n, ds in raw.items()}
    cycle = find_cycle(deps)
    if cycle is not None:
        assert cycle[0] == cycle[-1] and len(cycle) >= 2
        assert all(b in deps[a] for a, b in itertools.pairwise(cycle))
    else:  # Kahn's algorithm orders every node
        left = {n: set(ds) for n, ds in deps.items()}
        while left:
            ready = [n for n, ds in left.items() if not ds]
            assert ready, left
            for n in ready:
                del left[n]
            for ds in left.values():
                ds.difference_update(ready)


def test_downstream_is_everything_that_depends_on_the_roots() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": [], "e": ["d", "c"]}
    assert downstream(deps, {"b"}) == {"c", "e"}
    assert downstream(deps, {"d"}) == {"e"}


ROOT = {"steps": {"login": {"phase": "Succeeded", "result": {"data": {
    "token": "t-1", "api-key": "k", "items": [{"id": 7}, {"id": 8}], "n": 3}}}}}  # fmt: skip


def test_expressions_keep_types_when_whole_and_become_text_inside_text() -> None:
    assert render("{{ steps.login.result.data.token }}", ROOT) == "t-1"
    assert render("{{steps.login.result.data.n}}", ROOT) == 3
    assert render("{{ steps.login.result.data.items }}", ROOT) == [{"id": 7}, {"id": 8}]
    assert render("Bearer {{ steps.login.result.data.token }}", ROOT) == "Bearer t-1"
    assert render("ids: {{ steps.login.result.data.items[1] }}", ROOT) == 'ids: {"id":8}'
    assert render('{{ steps.login.result.data["api-key"] }}', ROOT) == "k"
    assert render({"h": ["{{ steps.login.result.data.items[0].id }}", 1]}, ROOT) == {"h": [7, 1]}
    assert render("no expressions {here}", ROOT) == "no expressions {here}"


@pytest.mark.parametrize(
    ("expr", "message"),
    [("{{ steps.logout.result }}", "no 'logout' in steps"),
     ("{{ steps.login.result.data.tokens }}", "no 'tokens' in steps.login.result.data (an object; it has"),
     ("{{ steps.login.result.data.items[5] }}", "no item [5] in steps.login.result.data.items (a list of 2)"),
     ("{{ steps.login.result.data.token.x }}", "no 'x' in steps.login.result.data.token (text)"),
     ("{{ __import__('os') }}", "is not a path"),
     ("{{ steps.login + 1 }}", "is not a path")],
)  # fmt: skip
def test_a_bad_expression_says_how_far_it_got(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as e:
        render(expr, ROOT)
    assert message in str(e.value)


def test_paths_parse_names_indices_and_quoted_keys() -> None:
    assert parse_path("a.b[0][\"c-d\"]['e']") == ["a", "b", 0, "c-d", "e"]


def wf(steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "deploy-check", "namespace": "ns", "uid": "wf-uid", "generation": 1},
            "spec": {"steps": steps, **spec}, "status": {}}  # fmt: skip


def tmpl(**payload: Any) -> dict[str, Any]:
    return {"agentRef": "fn", "type": "custom", "payload": payload}


def task_of(
    name: str, phase: str, data: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "result": {"data": data or {}}, **status},
    }


def by_name(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """decide() takes the step tasks by task name; the tests keep them by step."""
    return {t["metadata"]["name"]: t for t in tasks.values()}


def advance(w: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> Any:
    plan = decide(w, by_name(tasks), NOW)
    w["status"] = plan.status
    return plan


DIAMOND: list[dict[str, Any]] = [{"name": "health", "template": tmpl(url="https://x/health")},
           {"name": "e2e", "dependsOn": ["health"], "template": tmpl(v="{{ steps.health.result.data.version }}")},
           {"name": "shot", "dependsOn": ["health"], "template": tmpl()},
           {"name": "diff", "dependsOn": ["e2e", "shot"], "template": tmpl(base="{{ steps.shot.task }}")}]  # fmt: skip


def test_a_diamond_runs_in_order_passing_results_along() -> None:
    w = wf(copy.deepcopy(DIAMOND), outputs={"version": "{{ steps.health.result.data.version }}"})
    p = advance(w, {})
    assert [t["metadata"]["labels"][STEP_LABEL] for t in p.create] == ["health"]
    t = p.create[0]
    assert t["metadata"]["name"] == step_task_name("deploy-check", "wf-uid", "health")
    assert t["metadata"]["labels"][WORKFLOW_LABEL] == "deploy-check"
    assert t["metadata"]["ownerReferences"][0]["kind"] == "AgentWorkflow"
    assert w["status"]["phase"] == "Running" and w["status"]["progress"] == "0/4"
    # The same pass again, before the task is seen: the same name, so never two tasks.
    assert [c["metadata"]["name"] for c in decide(w, by_name({}), NOW).create] == [
        t["metadata"]["name"]
    ]
    tasks = {"health": task_of(t["metadata"]["name"], "Running")}
    assert advance(w, tasks).create == []
    tasks["health"] = task_of(t["metadata"]["name"], "Succeeded", {"version": "2.4.1"})
    p = advance(w, tasks)
    made = {c["metadata"]["labels"][STEP_LABEL]: c for c in p.create}
    assert set(made) == {"e2e", "shot"}  # in parallel
    assert made["e2e"]["spec"]["payload"] == {"v": "2.4.1"}
    tasks |= {n: task_of(c["metadata"]["name"], "Succeeded") for n, c in made.items()}
    p = advance(w, tasks)
    assert p.create[0]["spec"]["payload"] == {"base": made["shot"]["metadata"]["name"]}
    tasks["diff"] = task_of(p.create[0]["metadata"]["name"], "PartiallySucceeded")
    advance(w, tasks)
    assert w["status"]["phase"] == "Succeeded" and w["status"]["progress"] == "4/4"
    assert w["status"]["outputs"] == {"version": "2.4.1"}
    assert [s["phase"] for s in w["status"]["steps"]] == ["Succeeded"] * 4


def test_fail_fast_cancels_what_runs_and_skips_the_rest() -> None:
    w = wf(copy.deepcopy(DIAMOND))
    advance(w, {})
    names = {s["name"]: step_task_name("deploy-check", "wf-uid", s["name"]) for s in DIAMOND}
    tasks = {"health": task_of(names["health"], "Succeeded", {"version": "1"})}
    advance(w, tasks)
    tasks |= {"e2e": task_of(names["e2e"], "Failed", message="step 3 failed"),
              "shot": task_of(names["shot"], "Running")}  # fmt: skip
    p = advance(w, tasks)
    assert p.cancel == [names["shot"]] and p.create == []
    assert w["status"]["phase"] == "Failed" and w["status"]["reason"] == "StepFailed"
    assert w["status"]["message"] == "step e2e failed: step 3 failed"
    assert {s["name"]: s["phase"] for s in w["status"]["steps"]}["diff"] == "Skipped"
    assert decide(w, by_name(tasks), NOW).create == []  # finished: nothing more, ever


def test_continue_runs_the_other_branches_then_fails() -> None:
    steps: list[dict[str, Any]] = [{"name": "a", "template": tmpl()}, {"name": "b", "dependsOn": ["a"], "template": tmpl()},
             {"name": "c", "template": tmpl()}]  # fmt: skip
    w = wf(steps, failurePolicy="Continue")
    p = advance(w, {})
    assert {c["metadata"]["labels"][STEP_LABEL] for c in p.create} == {"a", "c"}
    n = {s["name"]: step_task_name("deploy-check", "wf-uid", s["name"]) for s in steps}
    tasks = {"a": task_of(n["a"], "Failed"), "c": task_of(n["c"], "Running")}
    p = advance(w, tasks)
    assert p.cancel == [] and p.create == [] and w["status"]["phase"] == "Running"
    assert {s["name"]: s["phase"] for s in w["status"]["steps"]} == {
        "a": "Failed",
        "b": "Skipped",
        "c": "Running",
    }
    tasks["c"] = task_of(n["c"], "Succeeded")
    advance(w, tasks)
    assert (
        w["status"]["phase"] == "Failed"
        and w["status"]["message"] == "steps that did not succeed: a"
    )


def test_a_missing_result_fails_the_step_with_the_path() -> None:
    steps = [{"name": "login", "template": tmpl()},
             {"name": "use", "dependsOn": ["login"], "template": tmpl(t="{{ steps.login.result.data.token }}")}]  # fmt: skip
    w = wf(steps)
    advance(w, {})
    tasks = {
        "login": task_of(
            step_task_name("deploy-check", "wf-uid", "login"), "Succeeded", {"other": 1}
        )
    }
    p = advance(w, tasks)
    assert p.create == [] and w["status"]["phase"] == "Failed"
    assert (
        "spec.steps[use].template: steps.login.result.data.token: no 'token'"
        in w["status"]["message"]
    )


def test_cancel_suspend_deadline_and_ttl() -> None:
    steps = [
        {"name": "a", "template": tmpl()},
        {"name": "b", "dependsOn": ["a"], "template": tmpl()},
    ]
    n = step_task_name("deploy-check", "wf-uid", "a")
    w = wf(steps, suspend=True)
    p = advance(w, {})
    assert p.create == [] and w["status"]["phase"] == "Suspended"
    w["spec"]["suspend"] = False
    assert advance(w, {}).create
    w["spec"]["cancel"] = True
    p = advance(w, {"a": task_of(n, "Running")})
    assert p.cancel == [n] and w["status"]["phase"] == "Cancelled"
    w2 = wf(steps, deadlineSeconds=60)
    advance(w2, {})
    p = decide(w2, by_name({"a": task_of(n, "Running")}), NOW + timedelta(seconds=61))
    assert (
        p.status["phase"] == "Failed"
        and p.status["reason"] == "DeadlineExceeded"
        and p.cancel == [n]
    )
    w3 = wf(steps, ttlSecondsAfterFinished=30)
    w3["status"] = {"phase": "Succeeded", "completionTime": "2026-12-03T12:00:00Z"}
    assert not decide(w3, by_name({}), NOW + timedelta(seconds=29)).delete
    assert decide(w3, by_name({}), NOW + timedelta(seconds=30)).delete


def test_a_cycle_fails_the_workflow_at_once_naming_it() -> None:
    w = wf([{"name": "a", "dependsOn": ["b"], "template": tmpl()},
            {"name": "b", "dependsOn": ["a"], "template": tmpl()}])  # fmt: skip
    p = advance(w, {})
    assert p.create == [] and w["status"]["reason"] == "InvalidWorkflow"
    assert w["status"]["message"] == "the steps depend on each other in a cycle: a -> b -> a"


def test_a_secret_by_reference_is_refused_in_a_step() -> None:
    w = wf(
        [
            {
                "name": "a",
                "template": tmpl(headersFrom={"X": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            }
        ]
    )
    p = advance(w, {})
    assert p.create == [] and w["status"]["phase"] == "Failed"
    assert "names Secret s" in w["status"]["message"]


def names_of(p: Any) -> list[str]:
    return [c["metadata"]["name"] for c in p.create]


def test_a_fan_out_over_a_result_list_with_parallelism_then_an_aggregate() -> None:
    steps: list[dict[str, Any]] = [
        {"name": "scrape", "template": tmpl()},
        {"name": "each", "dependsOn": ["scrape"], "parallelism": 2,
         "withResultItems": "{{ steps.scrape.result.data.links }}",
         "template": tmpl(url="{{ item.href }}", n="{{ itemIndex }}")},
        {"name": "sum", "dependsOn": ["each"], "template": tmpl(all="{{ steps.each.results }}")}]  # fmt: skip
    w = wf(steps)
    advance(w, {})
    scrape = step_task_name("deploy-check", "wf-uid", "scrape")
    links = [{"href": f"https://x/{i}"} for i in range(5)]
    tasks = {"scrape": task_of(scrape, "Succeeded", {"links": links})}
    p = advance(w, tasks)
    assert [c["spec"]["payload"] for c in p.create] == [
        {"url": "https://x/0", "n": 0},
        {"url": "https://x/1", "n": 1},
    ]
    assert [c["metadata"]["labels"]["agents.wallestars.io/item"] for c in p.create] == ["0", "1"]
    each = {s["name"]: s for s in w["status"]["steps"]}["each"]
    assert each["items"] == 5 and each["phase"] == "Running"
    inst = [step_task_name("deploy-check", "wf-uid", "each", i) for i in range(5)]
    assert names_of(p) == inst[:2]
    tasks |= {"e0": task_of(inst[0], "Succeeded", {"v": 0}), "e1": task_of(inst[1], "Running")}
    p = advance(w, tasks)
    assert names_of(p) == [inst[2]]  # one finished: one more, never over 2 running
    tasks |= {
        "e1": task_of(inst[1], "Succeeded", {"v": 1}),
        "e2": task_of(inst[2], "Succeeded", {"v": 2}),
    }
    p = advance(w, tasks)
    assert names_of(p) == inst[3:5]
    tasks |= {f"e{i}": task_of(inst[i], "Succeeded", {"v": i}) for i in (3, 4)}
    p = advance(w, tasks)
    assert p.create[0]["spec"]["payload"] == {"all": [{"v": i} for i in range(5)]}  # in item order
    assert {s["name"]: s for s in w["status"]["steps"]}["each"]["done"] == 5


def test_a_failed_item_fails_the_fan_out_step() -> None:
    w = wf([{"name": "each", "withItems": ["a", "b"], "template": tmpl(x="{{ item }}")}])
    p = advance(w, {})
    assert [c["spec"]["payload"] for c in p.create] == [{"x": "a"}, {"x": "b"}]
    n0, n1 = names_of(p)
    p = advance(w, {"0": task_of(n0, "Failed", message="boom"), "1": task_of(n1, "Running")})
    assert (
        w["status"]["phase"] == "Failed"
        and w["status"]["message"] == "step each failed: item 0 failed: boom"
    )
    assert p.cancel == [n1]


def test_a_matrix_over_agents_renders_the_agent_too() -> None:
    step = {"name": "e2e", "withItems": ["chromium", "firefox"], "template": {
        "agentRef": "{{ item }}", "type": "e2e-test", "payload": {"url": "https://x/"}}}  # fmt: skip
    p = advance(wf([step]), {})
    assert [c["spec"]["agentRef"] for c in p.create] == ["chromium", "firefox"]


def test_when_false_skips_a_step_whose_dependents_still_run() -> None:
    steps: list[dict[str, Any]] = [
        {"name": "check", "template": tmpl()},
        {"name": "deploy", "dependsOn": ["check"], "when": "{{ steps.check.result.data.ok }} == true",
         "template": tmpl()},
        {"name": "notify", "dependsOn": ["deploy"], "when": "{{ steps.check.phase }} != Failed",
         "template": tmpl()}]  # fmt: skip
    w = wf(steps)
    advance(w, {})
    tasks = {
        "check": task_of(
            step_task_name("deploy-check", "wf-uid", "check"), "Succeeded", {"ok": False}
        )
    }
    p = advance(w, tasks)
    st = {s["name"]: s for s in w["status"]["steps"]}
    assert st["deploy"]["phase"] == "Skipped" and st["deploy"]["condition"] is False
    assert [c["metadata"]["labels"][STEP_LABEL] for c in p.create] == ["notify"]


def test_conditions_compare_typed_values_and_words() -> None:
    from wallestars_operator.workflows.expressions import condition

    root = {
        "steps": {"a": {"phase": "Succeeded", "result": {"data": {"n": 3, "ok": True, "s": "x"}}}}
    }
    assert condition("{{ steps.a.result.data.n }} == 3", root)
    assert not condition("{{ steps.a.result.data.n }} == 4", root)
    assert condition("{{ steps.a.phase }} == Succeeded", root)
    assert condition("{{ steps.a.result.data.ok }}", root)
    assert condition('{{ steps.a.result.data.s }} == "x"', root)
    assert not condition("false", root)
    with pytest.raises(ExpressionError):
        condition("{{ steps.b.phase }} == Succeeded", root)


def test_a_step_is_ready_from_its_last_dependency_end() -> None:
    """What the step start delay metric measures from."""
    steps: list[dict[str, Any]] = [{"name": "a", "template": tmpl()}, {"name": "b", "template": tmpl()},
                                   {"name": "c", "dependsOn": ["a", "b"], "template": tmpl()}]  # fmt: skip
    w = wf(steps)
    p = advance(w, {})
    assert set(p.ready_since.values()) == {NOW}  # roots: the workflow's start
    n = {s["name"]: step_task_name("deploy-check", "wf-uid", s["name"]) for s in steps}
    tasks = {"a": task_of(n["a"], "Succeeded", completionTime="2026-12-03T12:00:05Z"),
             "b": task_of(n["b"], "Succeeded", completionTime="2026-12-03T12:00:09Z")}  # fmt: skip
    p = advance(w, tasks)
    assert p.ready_since == {n["c"]: datetime(2026, 12, 3, 12, 0, 9, tzinfo=UTC)}


ON_EXIT = {"onExit": {"template": tmpl(msg="ended {{ workflow.phase }}: {{ workflow.reason }}")}}


def test_on_exit_runs_after_a_failure_and_sees_the_outcome() -> None:
    steps: list[dict[str, Any]] = [{"name": "a", "template": tmpl()}]
    w = wf(steps, **ON_EXIT)
    advance(w, {})
    a = step_task_name("deploy-check", "wf-uid", "a")
    tasks = {"a": task_of(a, "Failed", message="boom")}
    p = advance(w, tasks)
    (exit_task,) = p.create
    assert exit_task["metadata"]["name"] == step_task_name("deploy-check", "wf-uid", "on-exit")
    assert exit_task["spec"]["payload"] == {"msg": "ended Failed: StepFailed"}
    assert w["status"]["phase"] == "Running" and w["status"]["reason"] == "OnExit"
    assert (
        w["status"]["outcome"]["phase"] == "Failed" and w["status"]["onExit"]["phase"] == "Running"
    )
    tasks["exit"] = task_of(exit_task["metadata"]["name"], "Running")
    assert advance(w, tasks).create == []  # never twice
    tasks["exit"] = task_of(exit_task["metadata"]["name"], "Succeeded")
    advance(w, tasks)
    assert w["status"]["phase"] == "Failed" and w["status"]["message"].startswith("step a failed")
    assert w["status"]["onExit"] == {"phase": "Succeeded", "task": exit_task["metadata"]["name"]}
    assert "outcome" not in w["status"]


def test_a_failed_on_exit_fails_a_workflow_whose_steps_succeeded() -> None:
    w = wf([{"name": "a", "template": tmpl()}], **ON_EXIT)
    advance(w, {})
    tasks = {"a": task_of(step_task_name("deploy-check", "wf-uid", "a"), "Succeeded")}
    (exit_task,) = advance(w, tasks).create
    assert exit_task["spec"]["payload"] == {"msg": "ended Succeeded: Succeeded"}
    tasks["exit"] = task_of(exit_task["metadata"]["name"], "Failed")
    advance(w, tasks)
    assert w["status"]["phase"] == "Failed" and w["status"]["reason"] == "OnExitFailed"


def test_a_cancelled_step_is_asked_to_cancel_once() -> None:
    w = wf([{"name": "a", "template": tmpl()}], cancel=True)
    a = step_task_name("deploy-check", "wf-uid", "a")
    running = task_of(a, "Running")
    assert decide(w, by_name({"a": running}), NOW).cancel == [a]
    running["spec"] = {"cancel": True}
    assert decide(w, by_name({"a": running}), NOW).cancel == []


def test_conditions_say_running_suspended_then_succeeded_with_transition_times_kept() -> None:
    w = wf([{"name": "a", "template": tmpl()}])
    advance(w, {})
    conds = {c["type"]: c for c in w["status"]["conditions"]}
    assert conds["Running"]["status"] == "True" and conds["Suspended"]["status"] == "False"
    assert "Succeeded" not in conds  # not decided while it runs
    first = conds["Running"]["lastTransitionTime"]
    name = step_task_name("deploy-check", "wf-uid", "a")
    later = NOW + timedelta(minutes=5)
    plan = decide(w, by_name({"a": task_of(name, "Running")}), later)
    assert {c["type"]: c for c in plan.status["conditions"]}["Running"][
        "lastTransitionTime"
    ] == first
    plan = decide(w, by_name({"a": task_of(name, "Failed", message="boom")}), later)
    conds = {c["type"]: c for c in plan.status["conditions"]}
    assert conds["Running"]["status"] == "False" and conds["Running"]["reason"] == "Failed"
    assert conds["Succeeded"]["status"] == "False" and conds["Succeeded"]["reason"] == "StepFailed"
    assert conds["Succeeded"]["lastTransitionTime"] == ts(later)
    s = wf([{"name": "a", "template": tmpl()}], suspend=True)
    advance(s, {})
    conds = {c["type"]: c for c in s["status"]["conditions"]}
    assert s["status"]["phase"] == "Suspended" and conds["Suspended"]["status"] == "True"


def run_of(name: str, created: str, phase: str, shot_task: str | None = None,
           series: str = "checks", uid: str | None = None) -> dict[str, Any]:  # fmt: skip
    steps = [{"name": "shot", "phase": "Succeeded", "task": shot_task}] if shot_task else []
    return {"metadata": {"name": name, "uid": uid or name + "-uid", "creationTimestamp": created,
                         "labels": {SERIES_LABEL: series}},
            "status": {"phase": phase, "steps": steps}}  # fmt: skip


def test_the_previous_run_is_the_newest_earlier_succeeded_run_of_the_series() -> None:
    me = run_of("c4", "2026-12-03T12:04:00Z", "Running")
    runs = [run_of("c1", "2026-12-03T12:01:00Z", "Succeeded", "t1"),
            run_of("c2", "2026-12-03T12:02:00Z", "Succeeded", "t2"),
            run_of("c3", "2026-12-03T12:03:00Z", "Failed", "t3"),  # a regression: not a baseline
            run_of("c5", "2026-12-03T12:05:00Z", "Succeeded", "t5"),  # made after this one
            me]  # fmt: skip
    prev = previous_run(me, runs)
    assert prev is not None and prev["metadata"]["name"] == "c2"
    # Made in the same second: the name decides (a schedule names runs by their time).
    twin = run_of("c2b", "2026-12-03T12:02:00Z", "Succeeded", "t2b")
    prev = previous_run(run_of("c2c", "2026-12-03T12:02:00Z", "Running"), [*runs, twin])
    assert prev is not None and prev["metadata"]["name"] == "c2b"
    assert previous_run(run_of("c0", "2026-12-03T12:00:00Z", "Running"), runs) is None
    view = previous_view(runs[1], {"t2": task_of("t2", "Succeeded", {"bytes": 9})})
    assert view == {"exists": True, "name": "c2", "outputs": {},
                    "steps": {"shot": {"phase": "Succeeded", "task": "t2",
                                       "result": {"data": {"bytes": 9}}}}}  # fmt: skip
    assert previous_view(None, {}) == {"exists": False}
    assert series_of(me) == (SERIES_LABEL, "checks")
    scheduled = {"metadata": {"name": "x", "labels": {"agents.wallestars.io/schedule": "nightly"}}}
    assert series_of(scheduled) == ("agents.wallestars.io/schedule", "nightly")
    assert series_of({"metadata": {"name": "x"}}) is None


DEPLOY_CHECK: list[dict[str, Any]] = [
    {"name": "shot", "template": tmpl(url="https://x/")},
    {"name": "visual", "dependsOn": ["shot"], "when": "{{ previous.exists }}",
     "template": tmpl(baseline={"artifact": {"task": "{{ previous.steps.shot.task }}"}})},
]  # fmt: skip


def test_a_step_compares_with_the_previous_run_and_is_skipped_on_the_first() -> None:
    assert reads_previous({"steps": DEPLOY_CHECK})
    assert not reads_previous({"steps": DIAMOND})
    first = wf(copy.deepcopy(DEPLOY_CHECK))
    shot = step_task_name("deploy-check", "wf-uid", "shot")
    plan = decide(first, {shot: task_of(shot, "Succeeded")}, NOW, {"exists": False})
    assert plan.create == []
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["steps"][1]["phase"] == "Skipped"
    second = wf(copy.deepcopy(DEPLOY_CHECK))
    second["metadata"]["uid"] = "wf-uid-2"
    shot2 = step_task_name("deploy-check", "wf-uid-2", "shot")
    previous = previous_view(run_of("deploy-check-1", "t", "Succeeded", shot), {})
    plan = decide(second, {shot2: task_of(shot2, "Succeeded")}, NOW, previous)
    assert [c["spec"]["payload"] for c in plan.create] == [
        {"baseline": {"artifact": {"task": shot}}}
    ]
    # A previous run without that step: the step fails, saying where the path ended.
    plan = decide(second, {shot2: task_of(shot2, "Succeeded")}, NOW,
                  {"exists": True, "name": "old", "steps": {}, "outputs": {}})  # fmt: skip
    assert plan.status["phase"] == "Failed"
    assert "previous.steps.shot.task: no 'shot'" in plan.status["steps"][1]["message"]
