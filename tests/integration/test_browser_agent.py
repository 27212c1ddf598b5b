"""The browser agent end to end on the real node: operator -> Job -> a container of the
browser image (`python -m wallestars_browser`: real Chromium, real smokescreen, confined
as in production) -> signed callbacks and artifacts -> webhook service -> AgentTask
status. Pages come from the fixture site on the node's address, which the test Agent's
network policy allows by exact address and port."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import localcluster
import pytest
import yaml
from harness import (
    REPO,
    TERMINAL_PHASES,
    Kubectl,
    OperatorProcess,
    WebhookService,
    credential_secret,
    download,
    http_agent,
    install_chart_rbac,
    phase_is,
    reader_token,
    start_operator,
    start_service,
    wait_for,
)
from PIL import Image
from realnode import images, node
from realnode.config import NODE_IP

from tests.fixture_site import Canary, Site, site_in_thread

pytestmark = pytest.mark.cluster


# The module's own webhook service and operator, on the real node's cluster: the service
# listens on the node's address, where the agents' containers call back.
@pytest.fixture(scope="module")
def webhook_service(
    real_cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookService]:
    install_chart_rbac(real_cluster)
    masters = [os.urandom(32)]
    svc = start_service(real_cluster, tmp_path_factory.mktemp("webhooks"), masters, host=NODE_IP)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def operator(
    real_cluster: localcluster.Cluster,
    webhook_service: WebhookService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    op = start_operator(real_cluster, tmp_path_factory.mktemp("operator"),
                        webhook_service.masters, webhook_service.url)  # fmt: skip
    yield op
    op.stop()


@pytest.fixture
def kubectl(real_cluster: localcluster.Cluster, real_namespace: str) -> Kubectl:
    return Kubectl(real_cluster.kubeconfig, real_namespace)


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Site, list[Canary]]]:
    with site_in_thread(canary_hosts=(), host=NODE_IP) as s:
        yield s


@pytest.fixture
def chrome(
    real_cluster: localcluster.Cluster, kubectl: Kubectl, site: tuple[Site, list[Canary]]
) -> str:
    """A browser Agent running the browser image's own entry point, allowed to reach the
    fixture site only."""
    tag = images.ensure(node.layout_of(real_cluster.dir), ["browser-agent"])["browser-agent"]
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent",
                   "metadata": {"name": "chrome"},
                   "spec": {"type": "browser", "concurrency": 4,
                            "capabilities": ["screenshot", "scrape", "e2e-test", "performance",
                                             "accessibility"],
                            "browser": {"image": tag, "imagePullPolicy": "Never",
                                        "network": {"allowPrivateAddresses": [f"{NODE_IP}:{site[0].port}"]}}}})  # fmt: skip
    return "chrome"


def engine_agent(kubectl: Kubectl, real_cluster: localcluster.Cluster, name: str, engine: str,
                 site_port: int, **browser: Any) -> None:  # fmt: skip
    tag = images.ensure(node.layout_of(real_cluster.dir), ["browser-agent"])["browser-agent"]
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent",
                   "metadata": {"name": name},
                   "spec": {"type": "browser", "concurrency": 2,
                            "capabilities": ["screenshot", "e2e-test"],
                            "browser": {"image": tag, "imagePullPolicy": "Never", "browser": engine,
                                        "network": {"allowPrivateAddresses": [f"{NODE_IP}:{site_port}"]},
                                        **browser}}})  # fmt: skip


def conditions(kubectl: Kubectl, agent: str) -> dict[str, dict[str, Any]]:
    st = kubectl.json("get", "agent", agent).get("status") or {}
    return {c["type"]: c for c in st.get("conditions") or []}


def create(kubectl: Kubectl, name: str, type_: str, payload: dict[str, Any], agent: str = "chrome",
           **spec: Any) -> None:  # fmt: skip
    kubectl.apply({
        "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": name},
        "spec": {"agentRef": agent, "type": type_, "payload": payload,
                 "retries": {"limit": 0}, **spec},
    })  # fmt: skip


def finished(kubectl: Kubectl, *names: str, timeout: float = 180) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for n in names:
            if n not in out and (st := phase_is(kubectl, n, *TERMINAL_PHASES)):
                out[n] = st
        return len(out) == len(names)

    wait_for(f"{names} to finish", all_done, timeout=timeout)
    return out


def why(st: dict[str, Any]) -> str:
    return f"{st.get('phase')} {st.get('reason')}: {st.get('message')} {st.get('result', {}).get('data')}"


def artifacts(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in st.get("result", {}).get("artifacts", [])}


def png(raw: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(raw))
    im.load()  # decodes the whole image, not just the header
    return im


def test_each_task_type_end_to_end(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    s = site[0]
    create(kubectl, "shot", "screenshot", {
        "url": f"{s.url}/visual", "selector": "#box",
        "viewport": {"width": 800, "height": 600, "deviceScaleFactor": 2}})  # fmt: skip
    create(kubectl, "scrape", "scrape", {
        "url": f"{s.url}/list", "selectors": {"title": "h1"},
        "fields": {"items": {"selector": ".item", "all": True},
                   "ids": {"selector": ".item", "attribute": "data-id", "all": True}},
        "pagination": {"nextSelector": "#next", "maxPages": 5}})  # fmt: skip
    create(kubectl, "e2e", "e2e-test", {"url": f"{s.url}/form", "steps": [
        {"action": "fill", "selector": "#name", "value": "Ada"},
        {"action": "select", "selector": "#plan", "value": "pro"},
        {"action": "click", "selector": "#submit"},
        {"action": "waitForUrl", "value": "**/form/done*"},
        {"action": "expectText", "selector": "#thanks", "value": "Thanks, Ada"},
        {"action": "expectCount", "selector": "#plan", "count": 1},
        {"action": "waitForNetworkIdle"},
        {"action": "screenshot", "name": "done"}]})  # fmt: skip
    create(kubectl, "perf", "performance", {
        "url": f"{s.url}/heavy", "thresholds": {"ttfb": 10_000, "load": 60_000, "tbt": 100}})  # fmt: skip
    create(kubectl, "a11y-ok", "accessibility", {"url": f"{s.url}/accessible"})
    create(kubectl, "a11y-bad", "accessibility", {"url": f"{s.url}/inaccessible"})
    st = finished(kubectl, "shot", "scrape", "e2e", "perf", "a11y-ok", "a11y-bad")
    token = reader_token(kubectl)

    def get(task: str, artifact: str) -> bytes:
        return download(webhook_service.url, artifacts(st[task])[artifact]["uri"], token)

    # screenshot: the element at device scale 2 (200x100 CSS px), a PNG that decodes.
    shot = st["shot"]
    assert shot["phase"] == "Succeeded", why(shot)
    data = shot["result"]["data"]
    image = png(get("shot", "screenshot.png"))
    assert image.size == (data["width"], data["height"])
    assert image.size[0] == 400 and 200 <= image.size[1] <= 202  # sub-pixel layout rounds up
    assert (
        len(data["perceptualHash"]) == 16
        and data["bytes"] == artifacts(shot)["screenshot.png"]["size"]
    )

    # scrape: every page followed, fields as lists across pages.
    sc = st["scrape"]
    assert sc["phase"] == "Succeeded", why(sc)
    d = sc["result"]["data"]["data"]
    assert d["items"] == [f"Item {i}" for i in range(1, 8)]
    assert d["ids"] == [str(i) for i in range(1, 8)]
    assert d["title"] == ["List page 1", "List page 2", "List page 3"]
    assert len(sc["result"]["data"]["pages"]) == 3

    # e2e: every step passed with a duration; a screenshot and a trace that is a zip.
    e2e = st["e2e"]
    assert e2e["phase"] == "Succeeded", why(e2e)
    steps = e2e["result"]["data"]["steps"]
    assert [x["status"] for x in steps] == ["passed"] * 8
    assert all(x["durationMs"] >= 0 for x in steps)
    png(get("e2e", "step-8.png"))
    with zipfile.ZipFile(io.BytesIO(get("e2e", "trace.zip"))) as z:
        assert z.testzip() is None and any(n.endswith(".trace") for n in z.namelist())
    # The attempt's own log, linked from its record, outlives the pod.
    log_text = download(webhook_service.url, e2e["attempts"][0]["logs"], token).decode()
    assert "attempt of a e2e-test task in chromium" in log_text and "final: passed" in log_text

    # performance: the metrics measured; the 300 ms long task breaks the TBT budget.
    perf = st["perf"]
    assert perf["phase"] == "Failed" and perf["reason"] == "AssertionFailed", why(perf)
    m = perf["result"]["data"]["metrics"]
    assert (
        m["ttfb"] > 0 and m["fcp"] > 0 and m["lcp"] > 0 and m["load"] >= m["domContentLoaded"] > 0
    )
    assert m["tbt"] >= 200 and m["cls"] > 0  # the page's long task and its layout shift
    budgets = perf["result"]["data"]["budgets"]
    assert budgets["tbt"]["passed"] is False and budgets["ttfb"]["passed"] is True
    assert "tbt" in perf["message"] and len(perf["attempts"]) == 1  # not retried

    # accessibility: a clean page passes; the bad one fails with rule ids and targets.
    assert st["a11y-ok"]["phase"] == "Succeeded", st["a11y-ok"]
    assert st["a11y-ok"]["result"]["data"]["counts"]["total"] == 0
    bad = st["a11y-bad"]
    assert bad["phase"] == "Failed" and bad["reason"] == "AssertionFailed", bad
    rules = {v["id"] for v in bad["result"]["data"]["violations"]}
    assert {"image-alt", "button-name"} <= rules, rules
    assert all(v["targets"] for v in bad["result"]["data"]["violations"])
    assert bad["result"]["data"]["counts"]["critical"] >= 1
    assert json.loads(get("a11y-bad", "axe-results.json"))["violations"]


def test_lighthouse_audits_in_a_container_of_the_browser_image(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    """performance with engine lighthouse: the image's Lighthouse (Playwright's Node.js)
    against the container's Chromium under the restricted profile, its report kept."""
    s = site[0]
    create(kubectl, "lh", "performance", {
        "url": f"{s.url}/accessible", "engine": "lighthouse",
        "categories": {"accessibility": 0.5}, "thresholds": {"lcp": 30_000}})  # fmt: skip
    st = finished(kubectl, "lh", timeout=240)["lh"]
    assert st["phase"] == "Succeeded", why(st)
    lh = st["result"]["data"]["lighthouse"]
    assert lh["version"] == "13.5.0" and lh.get("runtimeError") is None  # nulls leave status
    assert set(lh["categories"]) == {"performance", "accessibility", "best-practices", "seo"}
    assert st["result"]["data"]["metrics"]["lcp"] > 0
    report = json.loads(download(webhook_service.url, artifacts(st)["lighthouse.json"]["uri"],
                                 reader_token(kubectl)))  # fmt: skip
    assert report["finalDisplayedUrl"] == f"{s.url}/accessible"
    assert report["categories"]["accessibility"]["score"] == lh["categories"]["accessibility"]


def test_visual_regression_against_a_baseline(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    s = site[0]
    create(kubectl, "base", "screenshot", {"url": f"{s.url}/visual"})
    base = finished(kubectl, "base")["base"]
    assert base["phase"] == "Succeeded", why(base)
    token = reader_token(kubectl)
    s.files["base.png"] = download(
        webhook_service.url, artifacts(base)["screenshot.png"]["uri"], token
    )

    baseline = {"url": f"{s.url}/files/base.png", "maxDiffRatio": 0.001}
    create(kubectl, "same", "screenshot", {"url": f"{s.url}/visual", "baseline": baseline})
    create(
        kubectl, "changed", "screenshot", {"url": f"{s.url}/visual?variant=b", "baseline": baseline}
    )
    st = finished(kubectl, "same", "changed")
    same = st["same"]
    assert same["phase"] == "Succeeded", why(same)
    assert same["result"]["data"]["visual"] == {
        "diffRatio": 0.0, "maxDiffRatio": 0.001, "passed": True, "baselineSize": [1280, 800]}  # fmt: skip
    changed = st["changed"]
    assert changed["phase"] == "Failed" and changed["reason"] == "AssertionFailed", changed
    v = changed["result"]["data"]["visual"]
    assert v["passed"] is False and v["diffRatio"] > 0.001
    # The changed box is 200x100 of 1280x800 pixels.
    assert v["diffRatio"] == pytest.approx(200 * 100 / (1280 * 800), rel=0.05)
    png(download(webhook_service.url, artifacts(changed)["diff.png"]["uri"], token))


def test_e2e_failure_at_step_3_of_5(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    s = site[0]

    def steps(keep_going: bool) -> list[dict[str, Any]]:
        return [
            {"action": "fill", "selector": "#name", "value": "Bob"},
            {"action": "click", "selector": "#submit"},
            {"action": "expectText", "selector": "#thanks", "value": "Thanks, Alice",
             "timeoutMs": 1500, "continueOnFailure": keep_going},
            {"action": "expectVisible", "selector": "#plan"},
            {"action": "expectUrl", "value": "**/form/done?*"},
        ]  # fmt: skip

    create(kubectl, "stop", "e2e-test", {"url": f"{s.url}/form", "steps": steps(False)})
    create(kubectl, "go-on", "e2e-test", {"url": f"{s.url}/form", "steps": steps(True)})
    st = finished(kubectl, "stop", "go-on")
    for name, after in (("stop", ["skipped", "skipped"]), ("go-on", ["passed", "passed"])):
        t = st[name]
        assert t["phase"] == "Failed" and t["reason"] == "AssertionFailed", t
        assert len(t["attempts"]) == 1  # an assertion is not retried
        got = t["result"]["data"]["steps"]
        assert [x["status"] for x in got] == ["passed", "passed", "failed", *after]
        assert "Thanks, Alice" in got[2]["error"] and got[2]["artifact"] == "failed-step-3.png"
        assert "step '3. expectText' failed" in t["message"]
        names = set(artifacts(t))
        assert {"failed-step-3.png", "trace.zip"} <= names


def running(kubectl: Kubectl, name: str) -> Any:
    return phase_is(kubectl, name, "Running", *TERMINAL_PHASES)


def agent_processes(name: str) -> list[str]:
    """Live processes (the agent, Chromium, smokescreen) whose environment names this task."""
    marker = f"WALLESTARS_TASK_NAME={name}\x00".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(pid)
    return found


def test_cancel_and_deadline_mid_task(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    s = site[0]
    # Both wait for an element that appears only after 60 s.
    slow = {"url": f"{s.url}/slow-element", "steps": [
        {"action": "expectVisible", "selector": "#intro-missing", "timeoutMs": 1000,
         "continueOnFailure": True},
        {"action": "waitForSelector", "selector": "#ready", "timeoutMs": 120_000}]}  # fmt: skip
    create(kubectl, "cancel-me", "e2e-test", slow)
    create(kubectl, "too-slow", "e2e-test", slow, timeoutSeconds=20)
    # Mid-task: step 1 is done (progress 52) and step 2 is waiting.
    wait_for("cancel-me at step 2",
             lambda: (running(kubectl, "cancel-me") or {}).get("progress", 0) >= 50, timeout=90)  # fmt: skip
    assert len(agent_processes("cancel-me")) >= 3  # the agent, smokescreen, Chromium
    kubectl("patch", "agenttask", "cancel-me", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    st = finished(kubectl, "cancel-me", "too-slow")

    c = st["cancel-me"]
    assert c["phase"] == "Cancelled" and c["reason"] == "Cancelled", c

    # The stopped attempt handed in its evidence: where it stood, and the trace.
    def evidence() -> set[str] | None:
        names = set(artifacts(running(kubectl, "cancel-me")))
        return names if {"stopped-1.png", "trace.zip"} <= names else None

    try:
        wait_for("the evidence of the cancelled attempt", evidence, timeout=30)
    except AssertionError:
        raise AssertionError(json.dumps(running(kubectl, "cancel-me"))[:3000]) from None
    wait_for("the agent, Chromium and smokescreen to be gone",
             lambda: agent_processes("cancel-me") == [], timeout=30)  # fmt: skip

    t = st["too-slow"]
    assert t["phase"] == "TimedOut" and t["reason"] == "Timeout", t
    assert {"stopped-1.png", "trace.zip"} <= set(artifacts(t))
    steps = t["result"]["data"]["steps"] if "data" in t["result"] else None
    assert steps is None or steps[1]["status"] != "passed"
    wait_for("its processes to be gone", lambda: agent_processes("too-slow") == [], timeout=30)


def test_bad_payloads_fail_as_user_errors_without_retry(
    operator: OperatorProcess, kubectl: Kubectl, site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    """Payloads the API server lets through (it checks shapes, not every rule) are refused
    by the agent before the browser starts."""
    s = site[0]
    create(kubectl, "both", "screenshot", {"url": f"{s.url}/", "selector": "#x", "fullPage": True},
           retries={"limit": 3})  # fmt: skip
    create(kubectl, "jpeg-baseline", "screenshot", {
        "url": f"{s.url}/", "format": "jpeg", "baseline": {"url": f"{s.url}/files/x.png"}},
        retries={"limit": 3})  # fmt: skip
    create(kubectl, "unknown-metric", "performance", {"url": f"{s.url}/", "thresholds": {"speed": 1}},
           retries={"limit": 3})  # fmt: skip
    st = finished(kubectl, "both", "jpeg-baseline", "unknown-metric")
    for name, words in (("both", "exclude each other"), ("jpeg-baseline", "needs format png"),
                        ("unknown-metric", "unknown metrics ['speed']")):  # fmt: skip
        t = st[name]
        assert t["phase"] == "Failed" and t["reason"] == "UserError", t
        assert words in t["message"] and len(t["attempts"]) == 1, t


def test_the_api_server_refuses_what_it_can_check(kubectl: Kubectl) -> None:
    """Missing URL, unknown step action, absurd viewport: refused at `kubectl apply`."""
    cases = [
        ("screenshot", {"viewport": {"width": 800, "height": 600}}, "spec.payload.url is required"),
        ("e2e-test", {"steps": [{"action": "teleport"}]}, "spec.payload.steps[0].action"),
        ("screenshot", {"url": "http://a.example/", "viewport": {"width": 99999, "height": 10}},
         "spec.payload.viewport.width"),
        ("e2e-test", {"steps": [{"action": "expectCount", "selector": "li"}]},
         "an expectCount step needs count"),
        ("scrape", {"url": "http://a.example/"}, "spec.payload.selectors or spec.payload.fields"),
    ]  # fmt: skip
    for i, (type_, payload, words) in enumerate(cases):
        body = {"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": f"bad-{i}"},
                "spec": {"agentRef": "chrome", "type": type_, "payload": payload}}  # fmt: skip
        out = kubectl.run("apply", "-f", "-", input=json.dumps(body), check=False)
        assert out.returncode != 0 and words in out.stderr, (words, out.stderr)


def test_a_firefox_agent_is_probed_then_runs_tasks_in_firefox_in_its_viewport(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    real_cluster: localcluster.Cluster, site: tuple[Site, list[Canary]],
) -> None:  # fmt: skip
    """spec.browser.browser and spec.browser.viewport are real: the probe Job's
    --self-test starts Firefox in the image's container, the Agent becomes Ready on its
    verdict, and its tasks run in Firefox at the Agent's viewport unless they set one."""
    s = site[0]
    engine_agent(kubectl, real_cluster, "fox", "firefox", s.port,
                 viewport={"width": 1000, "height": 700})  # fmt: skip
    create(kubectl, "fox-default", "screenshot", {"url": f"{s.url}/visual"}, agent="fox")
    create(kubectl, "fox-own", "screenshot", {"url": f"{s.url}/visual",
           "viewport": {"width": 640, "height": 480}}, agent="fox")  # fmt: skip
    create(kubectl, "fox-e2e", "e2e-test", {"url": f"{s.url}/form", "steps": [
        {"action": "fill", "selector": "#name", "value": "Ada"},
        {"action": "click", "selector": "#submit"},
        {"action": "expectText", "selector": "#thanks", "value": "Thanks, Ada"}]}, agent="fox")  # fmt: skip
    st = finished(kubectl, "fox-default", "fox-own", "fox-e2e")
    agent = kubectl.json("get", "agent", "fox")["status"]
    probe = agent["probe"]
    assert probe["healthy"] is True and "firefox" in probe["message"], probe
    assert conditions(kubectl, "fox")["Ready"]["status"] == "True"
    # A probe is something that really ran: the heartbeat is no older than it.
    assert agent["lastHeartbeatTime"] >= probe["completionTime"]
    for name in ("fox-default", "fox-own", "fox-e2e"):
        assert st[name]["phase"] == "Succeeded", why(st[name])
        # Dispatched only after the probe passed.
        assert st[name]["attempts"][0]["startTime"] >= probe["completionTime"]
    token = reader_token(kubectl)

    def size(task: str) -> tuple[int, int]:
        raw = download(webhook_service.url, artifacts(st[task])["screenshot.png"]["uri"], token)
        return png(raw).size

    # Its statistics count what it ran: three successes.
    stats = wait_for("the agent's statistics", lambda: (
        a if (a := kubectl.json("get", "agent", "fox")["status"]).get("successRate") == 1.0 else None),
        timeout=90)  # fmt: skip
    durations = [float(st[n]["durationSeconds"]) for n in ("fox-default", "fox-own", "fox-e2e")]
    assert stats["meanDurationSeconds"] == pytest.approx(sum(durations) / 3, abs=0.01)
    assert size("fox-default") == (1000, 700)  # the Agent's viewport
    assert size("fox-own") == (640, 480)  # the task's own wins
    jobs = kubectl.json("get", "jobs", "-l", "agents.wallestars.io/probe=fox")["items"]
    assert jobs and jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"] == ["--self-test"]


def test_an_engine_the_image_lacks_is_reported_by_the_probe_before_any_task_is_sent(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    real_cluster: localcluster.Cluster, site: tuple[Site, list[Canary]],
) -> None:  # fmt: skip
    s = site[0]
    engine_agent(kubectl, real_cluster, "kit", "webkit", s.port)
    create(kubectl, "kit-shot", "screenshot", {"url": f"{s.url}/visual"}, agent="kit")
    ready = wait_for("the probe's verdict", lambda: (
        c if (c := conditions(kubectl, "kit").get("Ready")) and c["reason"] != "Probing" else None),
        timeout=180)  # fmt: skip
    assert ready["status"] == "False" and ready["reason"] == "BrowserUnavailable", ready
    assert "no webkit" in ready["message"]
    task = phase_is(kubectl, "kit-shot", "Queued")
    assert task and task["reason"] == "AgentUnhealthy" and not task.get("attempts"), task
    events = kubectl.json("get", "events", "--field-selector",
                          "involvedObject.kind=Agent,involvedObject.name=kit")["items"]  # fmt: skip
    assert any(e["reason"] == "BrowserUnavailable" and e["type"] == "Warning" for e in events)


def test_a_password_by_reference_is_typed_and_appears_in_no_output(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str,
) -> None:  # fmt: skip
    """An e2e fill from a Secret (valueFrom): the kubelet hands the value to the agent's
    container; the page echoes it back ("Thanks, <it>") and puts it in its URL; no status,
    Event, log line or artifact (result, agent.log, the trace's files) holds it."""
    s = site[0]
    secret_value = "pw-9d81c4e2aa"
    credential_secret(kubectl, "login", password=secret_value)
    create(kubectl, "secret-fill", "e2e-test", {"url": f"{s.url}/form", "steps": [
        {"action": "fill", "selector": "#name",
         "valueFrom": {"secretKeyRef": {"name": "login", "key": "password"}}},
        {"action": "click", "selector": "#submit"},
        {"action": "waitForUrl", "value": "**/form/done*"},
        {"action": "expectText", "selector": "#thanks", "value": "Thanks,"}]})  # fmt: skip
    st = finished(kubectl, "secret-fill")["secret-fill"]
    assert st["phase"] == "Succeeded", why(st)
    assert "[redacted]" in json.dumps(st["result"])  # the page's URL had it, now redacted
    job = kubectl.json("get", "jobs", "-l", "agents.wallestars.io/task=secret-fill")["items"][0]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "WALLESTARS_SECRET_0",
            "valueFrom": {"secretKeyRef": {"name": "login", "key": "password"}}} in env  # fmt: skip
    token = reader_token(kubectl)
    outputs = {
        "task": kubectl("get", "agenttask", "secret-fill", "-o", "json"),
        "job": json.dumps(job),
        "events": kubectl("get", "events", "-o", "json"),
        "operator log": operator.log.read_text(),
        "webhook log": webhook_service.log.read_text(),
    }
    for a in st["result"]["artifacts"]:
        raw = download(webhook_service.url, a["uri"], token)
        if a["name"].endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for n in z.namelist():
                    outputs[f"{a['name']}:{n}"] = z.read(n).decode(errors="replace")
        elif not a["name"].endswith((".png", ".jpeg")):  # a screenshot cannot be redacted
            outputs[a["name"]] = raw.decode(errors="replace")
    assert "agent.log" in outputs and any(k.startswith("trace.zip:") for k in outputs)
    leaked = [where for where, text in outputs.items() if secret_value in text]
    assert leaked == [], f"the secret value is in: {leaked}"
    # A Secret that did not opt in is refused before any pod could read it.
    credential_secret(kubectl, "plain", opt_in=False, password=secret_value)
    create(kubectl, "secret-refused", "e2e-test", {"url": f"{s.url}/form", "steps": [
        {"action": "fill", "selector": "#name",
         "valueFrom": {"secretKeyRef": {"name": "plain", "key": "password"}}}]})  # fmt: skip
    refused = finished(kubectl, "secret-refused")["secret-refused"]
    assert refused["phase"] == "Failed" and refused["error"]["code"] == "SecretRefused", refused
    assert refused["attempts"][0]["reason"] == "SecretRefused"
    assert not kubectl.json("get", "jobs", "-l", "agents.wallestars.io/task=secret-refused")[
        "items"
    ]


# --- workflows with real browsers (issue #17's examples) --------------------------------


def workflow_done(kubectl: Kubectl, name: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> Any:
        st = kubectl.json("get", "agentworkflow", name).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return dict(wait_for(f"workflow {name}", done, timeout=timeout))


def test_a_pipeline_from_a_real_browser_scrape_fans_out_to_a_cloud_function(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    site: tuple[Site, list[Canary]], chrome: str, function_url: str,
) -> None:  # fmt: skip
    """The data pipeline: a paginated scrape in Chromium, one cloud task per scraped item
    (at most 5 at once), then an aggregation of all their results."""
    s = site[0]
    http_agent(kubectl, function_url)
    fn = {"agentRef": "fn", "type": "custom"}
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow",
                   "metadata": {"name": "pipeline"}, "spec": {"steps": [
                       {"name": "scrape", "template": {"agentRef": chrome, "type": "scrape", "payload": {
                           "url": f"{s.url}/list", "fields": {"items": {"selector": ".item", "all": True}},
                           "pagination": {"nextSelector": "#next", "maxPages": 5}}}},
                       {"name": "each", "dependsOn": ["scrape"], "parallelism": 5,
                        "withResultItems": "{{ steps.scrape.result.data.data.items }}",
                        "template": {**fn, "payload": {"data": {"out": "{{ item }}: checked"}}}},
                       {"name": "sum", "dependsOn": ["each"],
                        "template": {**fn, "payload": {"data": {"out": "{{ steps.each.results }}"}}}}],
                       "outputs": {"all": "{{ steps.sum.result.data.out }}"}}})  # fmt: skip
    st = workflow_done(kubectl, "pipeline")
    assert st["phase"] == "Succeeded", st
    assert [r["out"] for r in st["outputs"]["all"]] == [f"Item {i}: checked" for i in range(1, 8)]
    assert {x["name"]: x for x in st["steps"]}["each"]["items"] == 7


def test_a_cross_browser_matrix_runs_one_e2e_test_in_chromium_and_firefox(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    real_cluster: localcluster.Cluster, site: tuple[Site, list[Canary]],
) -> None:  # fmt: skip
    s = site[0]
    engine_agent(kubectl, real_cluster, "in-chromium", "chromium", s.port)
    engine_agent(kubectl, real_cluster, "in-firefox", "firefox", s.port)
    kubectl.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentWorkflow",
                   "metadata": {"name": "matrix"}, "spec": {"steps": [
                       {"name": "signup", "withItems": ["in-chromium", "in-firefox"], "template": {
                           "agentRef": "{{ item }}", "type": "e2e-test", "retries": {"limit": 0},
                           "payload": {"url": f"{s.url}/form", "steps": [
                               {"action": "fill", "selector": "#name", "value": "Ada"},
                               {"action": "click", "selector": "#submit"},
                               {"action": "expectText", "selector": "#thanks", "value": "Thanks, Ada"}]}}}]}})  # fmt: skip
    st = workflow_done(kubectl, "matrix")
    assert st["phase"] == "Succeeded", st
    tasks = kubectl.json("get", "agenttasks", "-l", "agents.wallestars.io/workflow=matrix")["items"]
    assert sorted(t["status"]["agent"] for t in tasks) == ["in-chromium", "in-firefox"]
    assert all(t["status"]["result"]["data"]["passed"] == 3 for t in tasks), [
        t["status"]["result"] for t in tasks
    ]


def test_the_hybrid_deploy_check_compares_each_run_with_the_last_good_one(
    operator: OperatorProcess, webhook_service: WebhookService, kubectl: Kubectl,
    real_cluster: localcluster.Cluster, site: tuple[Site, list[Canary]], function_url: str,
) -> None:  # fmt: skip
    """examples/workflow-deploy-check.yaml as shipped, aimed at the fixture shop: a cloud
    api-test of its health endpoint, then an e2e test and a screenshot in Chromium, then a
    visual regression against the last succeeded run's screenshot. Four deploys: the
    first has no baseline; the second matches it; the third changes the banner and fails;
    the fourth (rolled back) is compared with the second, not with the regression."""
    s = site[0]
    http_agent(kubectl, function_url, name="api-checker")
    engine_agent(kubectl, real_cluster, "chromium", "chromium", s.port)
    text = (REPO / "examples" / "workflow-deploy-check.yaml").read_text()
    manifest = json.dumps(yaml.safe_load(text)).replace(
        "https://shop.example.com/", f"{s.url}/shop/"
    )

    def deploy_check() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        name = kubectl("create", "-f", "-", "-o", "jsonpath={.metadata.name}", input=manifest)
        st = workflow_done(kubectl, name)
        return st, {x["name"]: x for x in st["steps"]}

    def task_status(name: str) -> dict[str, Any]:
        return dict(kubectl.json("get", "agenttask", name)["status"])

    def baseline_of(step: dict[str, Any]) -> str:
        t = kubectl.json("get", "agenttask", step["task"])
        return str(t["spec"]["payload"]["baseline"]["artifact"]["task"])

    try:
        st, first = deploy_check()
        assert st["phase"] == "Succeeded", st
        assert first["visual"]["phase"] == "Skipped" and first["visual"]["message"].startswith(
            "when was false"
        )
        health = task_status(first["health"]["task"])["result"]["data"]
        assert health["passed"] is True and health["requests"][0]["status"] == 200
        assert task_status(first["e2e"]["task"])["result"]["data"]["passed"] == 5
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds == {"Running": "False", "Suspended": "False", "Succeeded": "True"}

        st, second = deploy_check()
        assert st["phase"] == "Succeeded", st
        assert baseline_of(second["visual"]) == first["screenshot"]["task"]
        visual = task_status(second["visual"]["task"])["result"]["data"]["visual"]
        assert visual["passed"] is True and visual["diffRatio"] == 0.0

        s.release.update(version="1.1", color="#c00")  # a deploy that changes the banner
        st, third = deploy_check()
        assert st["phase"] == "Failed" and st["reason"] == "StepFailed", st
        assert third["visual"]["phase"] == "Failed"
        assert "differ from the baseline" in third["visual"]["message"]
        assert baseline_of(third["visual"]) == second["screenshot"]["task"]
        v = task_status(third["visual"]["task"])["result"]["data"]["visual"]
        assert v["diffRatio"] == pytest.approx(200 * 100 / (1280 * 800), rel=0.05)

        s.release.update(version="1.2", color="#06c")  # rolled back
        st, fourth = deploy_check()
        assert st["phase"] == "Succeeded", st
        assert baseline_of(fourth["visual"]) == second["screenshot"]["task"]
    finally:
        s.release.update(version="1.0", color="#06c")
