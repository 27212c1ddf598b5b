"""The console in a real Chromium (Playwright), on the real control plane with the
operator and the webhook service: a person signs in with their own token, sees the
Agent, submits a task through the form and watches it go Queued -> Running -> Succeeded
without reloading, opens it and sees its image, cancels a long task, and sees a refused
form field explained. Another person who may only read sees the same pages but cannot
act. Screenshots of each page go to the test's directory (docs/console.md shows them).
Then the console's own accessibility, checked with our own `accessibility` task type's
code (axe) in the same browser: no serious or critical violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import localcluster
import pytest
from harness import (
    Kubectl,
    OperatorProcess,
    WebhookService,
    credential_secret,
    free_port,
    wait_for,
)
from helmlocal import CHART, helm_bin
from playwright.async_api import Page, async_playwright, expect

pytestmark = [pytest.mark.cluster, pytest.mark.requires("chromium")]
SHOTS = (
    Path(os.environ.get("WALLESTARS_CONSOLE_SHOTS", ""))
    if os.environ.get("WALLESTARS_CONSOLE_SHOTS")
    else None
)


@pytest.fixture(scope="module")
def world(cluster: localcluster.Cluster, webhook_service: WebhookService, function_url: str,
          operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    admin = Kubectl(cluster.kubeconfig)
    roles = subprocess.run([str(helm_bin()), "template", "wallestars", str(CHART), "--show-only",
                            "templates/aggregate-roles.yaml"], capture_output=True, text=True, check=True)  # fmt: skip
    admin.apply(roles.stdout)
    ns, people = "console-ui", "console-ui-people"
    for n in (ns, people):
        admin.run("create", "namespace", n, check=False)
    k = Kubectl(cluster.kubeconfig, ns)
    p = Kubectl(cluster.kubeconfig, people)
    for who, role in (("dana", "edit"), ("vic", "view")):
        p.run("create", "serviceaccount", who, check=False)
        k.run(
            "create",
            "rolebinding",
            f"{who}-{role}",
            f"--clusterrole={role}",
            f"--serviceaccount={people}:{who}",
            check=False,
        )
    credential_secret(k, "fn-auth", authorization="Bearer test-function-token")
    k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "shop-fn"},
             "spec": {"type": "cloud", "capabilities": ["custom", "api-test"], "concurrency": 4,
                      "cloud": {"provider": "http", "http": {"url": function_url,
                                "authHeaderSecretRef": {"name": "fn-auth", "key": "authorization"}}}}})  # fmt: skip
    tmp = tmp_path_factory.mktemp("console-ui")
    port = free_port()
    log = tmp / "console.log"
    proc = subprocess.Popen([sys.executable, "-m", "wallestars_console"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "WALLESTARS_CONSOLE_KUBECONFIG": str(cluster.kubeconfig),
                                 "WALLESTARS_CONSOLE_HOST": "127.0.0.1", "WALLESTARS_CONSOLE_PORT": str(port), "WALLESTARS_CONSOLE_METRICS_PORT": str(free_port()),
                                 "WALLESTARS_CONSOLE_ARTIFACTS_URL": webhook_service.url})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(
        "the console",
        lambda: (
            subprocess.run(["curl", "-sf", f"{url}/healthz"], capture_output=True).returncode == 0
        ),
    )
    tokens = {w: p("create", "token", w, "--duration=1h").strip() for w in ("dana", "vic")}
    yield {"url": url, "ns": ns, "k": k, "shots": SHOTS or tmp, **tokens}
    proc.terminate()
    proc.wait(10)
    for n in (ns, people):
        admin.run("delete", "namespace", n, "--wait=false", check=False)


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    chromium = shutil.which("chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        yield page
        await browser.close()


async def sign_in(page: Page, world: dict[str, Any], who: str) -> None:
    await page.goto(world["url"] + "/ui/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Bearer token").fill(world[who])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Namespace").fill(world["ns"])
    await page.get_by_role("button", name="Go").click()
    await expect(page.get_by_role("heading", name=f"Tasks in {world['ns']}")).to_be_visible()


async def shot(page: Page, world: dict[str, Any], name: str) -> None:
    world["shots"].mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(world["shots"] / f"console-{name}.png"), full_page=True)


async def test_a_person_submits_watches_opens_and_cancels_tasks(
    world: dict[str, Any], browser_page: Page
) -> None:
    page = browser_page
    await sign_in(page, world, "dana")
    assert "dana" in await page.locator(".who").inner_text()
    # The Agent, as its status says.
    await page.get_by_role("link", name="Agents").click()
    await expect(page.locator('tr[data-agent="shop-fn"]')).to_contain_text("cloud")
    await shot(page, world, "agents")
    # A refused field, explained where it is.
    await page.get_by_role("link", name="Submit a task").click()
    await page.get_by_label("Type").select_option("custom")
    await page.get_by_label("Agent", exact=True).fill("shop-fn")
    await page.get_by_label("Priority").fill("11")
    await page.get_by_role("button", name="Submit").click()
    await expect(page.get_by_role("alert")).to_contain_text("The API server refused the task")
    await expect(page.locator("#e-priority")).to_contain_text("10")
    await expect(page.get_by_label("Priority")).to_have_attribute("aria-invalid", "true")
    await shot(page, world, "refused")
    # Submitted; the list follows it live: no reload from here on.
    await page.get_by_label("Priority").fill("7")
    await page.get_by_label("Name", exact=True).fill("homepage")
    await page.get_by_label("More payload (JSON)").fill('{"data": {"behaviour": "show"}}')
    await page.get_by_role("button", name="Submit").click()
    await expect(page.get_by_role("heading", name="homepage")).to_be_visible()
    await page.get_by_role("link", name="Tasks").click()
    row = page.locator('tr[data-task="homepage"]')
    seen: list[str] = []
    await page.evaluate("window.__loaded = performance.timeOrigin")
    origin = await page.evaluate("window.__loaded")
    for _ in range(300):
        phase = await row.locator(".badge").inner_text()
        if not seen or seen[-1] != phase:
            seen.append(phase)
        if phase == "Succeeded":
            break
        await page.wait_for_timeout(50)
    assert seen[-1] == "Succeeded", seen
    assert "Running" in seen, seen  # the progress reports were shown as they came
    assert await page.evaluate("window.__loaded") == origin  # the same page: never reloaded
    await expect(row.locator(".pct")).to_have_text("100%")
    await shot(page, world, "tasks")
    # Its page: the image, through the webhook service with dana's own token.
    await row.get_by_role("link", name="homepage").click()
    img = page.get_by_role("img", name="screenshot.png of homepage")
    await expect(img).to_be_visible()
    assert await img.evaluate("i => i.naturalWidth") == 64
    await expect(page.locator(".timeline")).to_contain_text("attempt 1")
    await shot(page, world, "task")
    # A long task, cancelled from its page.
    await page.goto(f"{world['url']}/ui/ns/{world['ns']}/submit")
    await page.get_by_label("Type").select_option("custom")
    await page.get_by_label("Agent", exact=True).fill("shop-fn")
    await page.get_by_label("Name", exact=True).fill("long")
    await page.get_by_label("More payload (JSON)").fill('{"data": {"behaviour": "silent"}}')
    await page.get_by_role("button", name="Submit").click()
    await expect(page.locator("#task-phase")).to_have_text("Dispatched", timeout=20000)
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#task-phase")).to_have_text("Cancelled", timeout=20000)
    spec = world["k"].json("get", "agenttask", "long")["spec"]
    assert spec["cancel"] is True
    # A workflow, drawn as its graph, each step linking to its task.
    step = {"agentRef": "shop-fn", "type": "custom", "payload": {"data": {"out": "x"}}}
    world["k"].apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow", "metadata": {"name": "flow"},
                      "spec": {"steps": [{"name": "first", "template": step},
                                         {"name": "left", "dependsOn": ["first"], "template": step},
                                         {"name": "right", "dependsOn": ["first"], "template": step}]}})  # fmt: skip
    wait_for(
        "the workflow",
        lambda: (
            (world["k"].json("get", "agentworkflow", "flow").get("status") or {}).get("phase")
            == "Succeeded"
        ),
        timeout=60,
    )
    await page.get_by_role("link", name="Workflows").click()
    await page.get_by_role("link", name="flow", exact=True).click()
    graph = page.get_by_role("group", name="The steps of flow")
    await expect(graph).to_be_visible()
    assert (
        await page.locator("svg a.node").count() == 3
        and await page.locator("svg line.edge").count() == 2
    )
    await expect(page.locator("svg")).to_contain_text("Succeeded")
    await shot(page, world, "workflow")
    await page.locator("svg a.node", has_text="left").click()
    await expect(page.get_by_role("heading", name="flow-left")).to_be_visible()


async def test_a_reader_sees_but_cannot_act_and_forms_need_the_session(
    world: dict[str, Any], browser_page: Page
) -> None:
    page = browser_page
    world["k"].apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": "seen-by-vic"},
                      "spec": {"agentRef": "shop-fn", "type": "custom", "payload": {"data": {"behaviour": "silent"}}}})  # fmt: skip
    await sign_in(page, world, "vic")
    await expect(page.locator('tr[data-task="seen-by-vic"]')).to_be_visible()
    await page.locator('tr[data-task="seen-by-vic"] a').click()
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("heading", name="403 Forbidden")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("vic")
    assert not world["k"].json("get", "agenttask", "seen-by-vic")["spec"].get("cancel")
    # A form posted without the session's CSRF token changes nothing.
    status = await page.evaluate(
        """async (u) => (await fetch(u, {method: 'POST', body: new URLSearchParams({csrf: 'forged'}),
                                         credentials: 'same-origin'})).status""",
        f"{world['url']}/ui/ns/{world['ns']}/tasks/seen-by-vic/cancel")  # fmt: skip
    assert status == 403
    cookie = next(c for c in await page.context.cookies() if c["name"] == "wallestars_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    headers = (await page.request.get(world["url"] + "/ui/")).headers
    assert "script-src 'self'" in headers["content-security-policy"]


async def test_the_consoles_own_pages_have_no_serious_accessibility_violations(
    world: dict[str, Any], browser_page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own `accessibility` task type (the browser agent's Attempt: axe in Chromium,
    through its egress proxy, allowed to reach the console) over each page, signed in
    with dana's session cookie: no critical or serious violation."""
    import json

    from wallestars_browser import payloads
    from wallestars_browser.runner import Attempt, RunnerSettings

    monkeypatch.setenv(
        "WALLESTARS_SMOKESCREEN", str(localcluster.bin_dirs()["smokescreen"] / "smokescreen")
    )
    page = browser_page
    await sign_in(page, world, "dana")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "wallestars_session")
    ns, base = world["ns"], world["url"]
    port = base.rsplit(":", 1)[1]
    found: dict[str, Any] = {}
    for path in ("/ui/login", f"/ui/ns/{ns}/tasks", f"/ui/ns/{ns}/agents", f"/ui/ns/{ns}/submit",
                 f"/ui/ns/{ns}/tasks/homepage", f"/ui/ns/{ns}/workflows", f"/ui/ns/{ns}/workflows/flow"):  # fmt: skip
        payload = {"url": base + path, "standard": "wcag21aa", "thresholds": {"moderate": 100, "minor": 100},
                   "cookies": [{"name": "wallestars_session", "value": cookie["value"]}]}  # fmt: skip
        attempt = Attempt(RunnerSettings(task_type="accessibility", payload=json.dumps(payload),
                                         network=json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{port}"]}),
                                         chromium=shutil.which("chromium"), timeout_seconds=120))  # fmt: skip
        outcome = await attempt.run(payloads.parse("accessibility", payload))
        assert outcome.data["url"].endswith(path), outcome.data  # the page itself, not the sign-in
        counts = outcome.data["counts"]
        if counts["critical"] or counts["serious"]:
            found[path] = outcome.data["violations"]
    assert found == {}
