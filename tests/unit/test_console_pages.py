"""The console's pages render from their views (templates, autoescaping, results by
type), its sign-in cookie is sealed and checked, and a submission form becomes an API
request (pure: no server)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from wallestars_console import results
from wallestars_console import tasks as t
from wallestars_console.sessions import Sealer, cookie_attributes
from wallestars_console.ui import CSP, env, form_to_request, task_context

BASE = {"user": "alice", "csrf": "c", "ns": "shop"}


def task(
    type_: str, data: dict[str, Any], phase: str = "Succeeded", **status: Any
) -> dict[str, Any]:
    return {"metadata": {"uid": "u1", "namespace": "shop", "name": "t1", "creationTimestamp": "2026-12-03T10:00:00Z"},
            "spec": {"type": type_}, "status": {"phase": phase, "progress": 100, "agent": "chromium",
            "result": {"data": data, "artifacts": [
                {"name": "screenshot.png", "uri": "/api/artifacts/shop/t1/u1/1/screenshot.png", "contentType": "image/png", "size": 10},
                {"name": "trace.zip", "uri": "/api/artifacts/shop/t1/u1/1/trace.zip", "contentType": "application/zip"}]},
            "attempts": [{"attempt": 1, "agent": "chromium", "dispatchTime": "2026-12-03T10:00:01Z",
                          "completionTime": "2026-12-03T10:00:09Z", "outcome": phase}], **status}}  # fmt: skip


def render(name: str, **ctx: Any) -> str:
    return env.get_template(name).render(**BASE, **ctx)


def test_each_result_type_renders_what_a_person_needs() -> None:
    shot = render(
        "task.html",
        **task_context(
            task(
                "screenshot", {"visual": {"diffRatio": 0.02, "maxDiffRatio": 0.01, "passed": False}}
            ),
            [],
        ),
    )
    assert '<img src="/ui/ns/shop/tasks/t1/artifacts/screenshot.png"' in shot and "failed" in shot
    scrape = task_context(
        task("scrape", {"data": {"title": "Shop", "items": ["a", "b<script>"]}}), []
    )
    html = render("task.html", **scrape)
    assert (
        '<th scope="col">items</th>' in html
        and "b&lt;script&gt;" in html
        and "<script>" not in html.split("<main")[1]
    )
    e2e = render("task.html", **task_context(task("e2e-test", {"steps": [
        {"name": "1. click", "status": "passed", "durationMs": 3},
        {"name": "2. expectText", "status": "failed", "error": "no text", "artifact": "failed-step-2.png"}],
        "trace": "trace.zip"}, "Failed"), []))  # fmt: skip
    assert (
        "failed-step-2.png" in e2e and "Download the Playwright trace" in e2e and "no text" in e2e
    )
    perf = task_context(task("performance", {"metrics": {"lcp": 900, "cls": 0.2},
                                             "budgets": {"cls": {"value": 0.2, "budget": 0.1, "passed": False}}}), [])  # fmt: skip
    assert [b["metric"] for b in perf["budgets"]] == ["cls", "lcp"]
    assert "<strong>over</strong>" in render("task.html", **perf)
    a11y = task_context(task("accessibility", {"counts": {"serious": 2}, "violations": [
        {"id": "label", "impact": "critical", "help": "Form elements must have labels"},
        {"id": "color-contrast", "impact": "serious", "help": "contrast"}]}), [])  # fmt: skip
    assert [k for k, _ in a11y["violations"]] == ["critical", "serious"]
    html = render("task.html", **a11y)
    assert html.index("Critical (1)") < html.index("Serious (1)")


def test_a_running_task_shows_its_actions_and_no_result_yet() -> None:
    html = render("task.html", **task_context(task("screenshot", {}, "Running"), []))
    assert "/ui/ns/shop/tasks/t1/cancel" in html and "has not finished" in html
    assert 'name="csrf" value="c"' in html


def test_the_list_and_the_form_render_with_refusals_inline() -> None:
    v = t.view(task("echo", {}))
    html = render("tasks.html", tasks=[v], filters={"type": "echo"}, next="continue=x", error="",
                  phases=t.PHASES, types=("echo",), live=True, since="2026-12-03T10:00:00Z")  # fmt: skip
    assert (
        'data-task="t1"' in html
        and "Next page" in html
        and 'data-filters=\'{"type": "echo"}\'' in html
    )
    html = render("submit.html", types=("screenshot",), form={"type": "screenshot", "priority": "11"},
                  errors={"priority": "should be less than or equal to 10", "payload.url": "required"},
                  message="The API server refused the task; nothing was created.")  # fmt: skip
    assert re.search(r'id="f-priority"[^>]*aria-invalid="true"', html)
    assert 'id="e-url"' in html and "should be less than or equal to 10" in html


def test_the_form_becomes_a_request() -> None:
    body = form_to_request({"type": "screenshot", "url": " https://x/ ", "fullPage": "1", "priority": "7",
                            "payload": '{"waitFor": "networkidle"}', "steps": ""})  # fmt: skip
    assert body == {"type": "screenshot", "priority": 7,
                    "payload": {"waitFor": "networkidle", "url": "https://x/", "fullPage": True}}  # fmt: skip
    for bad, field in (({"type": "x", "payload": "[1]"}, "payload"), ({"type": "x", "payload": "{"}, "payload"),
                       ({"type": "x", "steps": "nope"}, "payload.steps"), ({"type": "x", "priority": "high"}, "priority")):  # fmt: skip
        with pytest.raises(t.BadRequest) as e:
            form_to_request(bad)
        assert e.value.field == field


def test_a_session_cookie_cannot_be_forged_altered_or_kept_past_its_age() -> None:
    s = Sealer(b"k" * 32, max_age=60)
    cookie, sess = s.seal("the-token", "alice", 1000.0)
    assert "the-token" not in cookie
    opened = s.open(cookie, 1001.0)
    assert opened is not None and opened.token == "the-token" and opened.user == "alice"
    assert s.open(cookie, 1061.0) is None  # expired
    assert s.open(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1], 1001.0) is None
    assert Sealer(b"x" * 32).open(cookie, 1001.0) is None  # another key
    assert s.open("garbage", 1001.0) is None and s.open(None, 1001.0) is None
    assert s.csrf_ok(sess, s.csrf(sess)) and not s.csrf_ok(sess, "x") and not s.csrf_ok(sess, None)
    assert cookie_attributes(60) == {
        "httponly": True,
        "secure": True,
        "samesite": "Strict",
        "path": "/",
        "max_age": 60,
    }
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Sealer(b"short")


def test_the_content_security_policy_allows_only_the_consoles_own_scripts() -> None:
    assert (
        "script-src 'self'" in CSP
        and "'unsafe-inline'" not in CSP
        and "frame-ancestors 'none'" in CSP
    )
    html = render("base.html")
    assert '<script src="/ui/static/console.js" defer></script>' in html
    assert (
        not re.search(r"<script>(?!</script>)", html)
        and " style=" not in html
        and "http" not in html.split("<body")[1]
    )


def test_a_scrape_table_lines_up_lists_and_single_values() -> None:
    assert results.table({"title": "T", "items": ["a", "b"]}) == (
        ["items", "title"],
        [["a", "T"], ["b", ""]],
    )
    assert results.table(None) == ([], [])


def test_a_workflow_is_drawn_in_layers_by_its_dependencies() -> None:
    from wallestars_console.graph import BOX_W, GAP_X, layers, layout

    steps: list[dict[str, Any]] = [{"name": "health"}, {"name": "e2e", "dependsOn": ["health"]}, {"name": "shot", "dependsOn": ["health"]},
             {"name": "visual", "dependsOn": ["e2e", "shot"]}]  # fmt: skip
    assert layers(steps) == {"health": 0, "e2e": 1, "shot": 1, "visual": 2}
    cyc = layers([{"name": "a", "dependsOn": ["b"]}, {"name": "b", "dependsOn": ["a"]}])
    assert set(cyc) == {"a", "b"} and all(0 <= d <= 2 for d in cyc.values())  # drawn, not looping
    wf = {"metadata": {"name": "w"}, "spec": {"steps": steps},
          "status": {"phase": "Running", "steps": [{"name": "health", "phase": "Succeeded", "task": "w-health-1"},
                                                   {"name": "e2e", "phase": "Running", "task": "w-e2e-1"}]}}  # fmt: skip
    boxes, edges, width, height = layout(wf)
    by = {b.name: b for b in boxes}
    assert (
        by["e2e"].x == by["shot"].x == by["health"].x + BOX_W + GAP_X
        and by["e2e"].y != by["shot"].y
    )
    assert (by["health"].phase, by["e2e"].phase, by["visual"].phase) == (
        "Succeeded",
        "Running",
        "Pending",
    )
    assert len(edges) == 4 and width > 3 * BOX_W
    html = render("workflow.html", wf={"name": "w", "phase": "Running", "progress": "1/4", "message": "",
                                       "outputs": {}}, boxes=boxes, edges=edges, width=width, height=height,
                  box_w=180, box_h=54)  # fmt: skip
    assert (
        'href="/ui/ns/shop/tasks/w-health-1"' in html
        and html.count('marker-end="url(#arrow)"') == 4
    )
    assert '<title id="graph-title">The steps of w: health Succeeded, e2e Running' in html


def test_a_refused_filter_renders_the_list_with_the_reason() -> None:
    html = render("tasks.html", tasks=[], filters={"phase": "x y"}, next="", error="phase must be a plain value",
                  phases=t.PHASES, types=("echo",), since="", live=False)  # fmt: skip
    assert "phase must be a plain value" in html and "data-live" not in html
