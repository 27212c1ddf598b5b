"""The console as the chart installs it, on the real node, in a real Chromium: a person
signs in with their own token, sees the browser Agent, submits a screenshot task
through the form, watches it go to Succeeded in the list without reloading (a container
of the browser image takes the screenshot), opens it and sees the image, served by the
chart's webhook service over HTTPS with the person's token. The console is reached as a
person would reach it from their machine: `kubectl port-forward` to localhost."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import helmlocal
import localcluster
import pytest
from harness import Kubectl, free_port, start_fixture_site, wait_for
from playwright.async_api import Page, async_playwright, expect
from realnode.config import NODE_IP

from tests import prometheus
from tests.integration.test_chart import grafana_to_promql

pytestmark = [pytest.mark.cluster, pytest.mark.requires("chromium")]
NS = "console-chart"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("console-chart")
    cluster = localcluster.up(state, ports=localcluster.Ports.free(), real_node=True)
    site_port = free_port()
    site = start_fixture_site(site_port, NODE_IP)
    forward: subprocess.Popen[str] | None = None
    try:
        wait_for("the fixture site", lambda: listening(NODE_IP, site_port))
        release = helmlocal.install(
            cluster, browser_namespaces=(NS,), reachable=((NODE_IP, site_port),), console=True
        )
        k = Kubectl(cluster.kubeconfig, NS)
        k.apply({"apiVersion": "agents.wallestars.io/v1alpha1", "kind": "Agent", "metadata": {"name": "chromium"},
                 "spec": {"type": "browser", "capabilities": ["screenshot"], "concurrency": 2,
                          "browser": {"network": {"allowPrivateAddresses": [f"{NODE_IP}:{site_port}"]}}}})  # fmt: skip
        k("create", "serviceaccount", "erin")
        k("create", "rolebinding", "erin-edit", "--clusterrole=edit", f"--serviceaccount={NS}:erin")
        token = k("create", "token", "erin", "--duration=1h").strip()
        system = Kubectl(cluster.kubeconfig, release.namespace)
        system("rollout", "status", f"deployment/{release.name}-console", "--timeout=180s")
        forward = subprocess.Popen(
            ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", release.namespace, "port-forward",
             f"svc/{release.name}-console", ":80"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert forward.stdout is not None
        line = forward.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, line
        yield {"url": f"http://localhost:{m[1]}", "token": token, "k": k,
               "site": f"http://{NODE_IP}:{site_port}", "release": release}  # fmt: skip
    finally:
        if forward is not None:
            forward.terminate()
        site.terminate()
        localcluster.down(state)


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        yield await browser.new_page(viewport={"width": 1280, "height": 860})
        await browser.close()


async def test_sign_in_submit_a_screenshot_watch_it_and_see_the_image(
    world: dict[str, Any], page: Page
) -> None:
    await page.goto(world["url"] + "/ui/")
    await page.get_by_label("Bearer token").fill(world["token"])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Namespace").fill(NS)
    await page.get_by_role("button", name="Go").click()
    await expect(page.get_by_role("heading", name=f"Tasks in {NS}")).to_be_visible()
    await page.get_by_role("link", name="Agents").click()
    await expect(page.locator('tr[data-agent="chromium"] .ready')).to_contain_text(
        "True", timeout=120000
    )
    await page.get_by_role("link", name="Submit a task").click()
    await page.get_by_label("Type").select_option("screenshot")
    await page.get_by_label("Name", exact=True).fill("front")
    await page.get_by_label("Agent", exact=True).fill("chromium")
    await page.get_by_label("URL", exact=True).fill(world["site"] + "/")
    await page.get_by_role("button", name="Submit").click()
    await expect(page.get_by_role("heading", name="front")).to_be_visible()
    await page.get_by_role("link", name="Tasks").click()
    origin = await page.evaluate("performance.timeOrigin")
    badge = page.locator('tr[data-task="front"] .badge')
    await expect(badge).to_have_text("Succeeded", timeout=180000)
    assert await page.evaluate("performance.timeOrigin") == origin  # followed live, never reloaded
    await page.locator('tr[data-task="front"] a').click()
    img = page.get_by_role("img", name="screenshot.png of front")
    await expect(img).to_be_visible()
    assert await img.evaluate("i => i.naturalWidth") == 1280


def test_the_consoles_dashboard_panels_have_data(world: dict[str, Any], tmp_path: Path) -> None:
    """After that session, Prometheus scraping the console's pod (its metrics port, as the
    chart's PodMonitor does) fills every Console panel of the overview dashboard."""
    release = world["release"]
    jobs = {"wallestars-console": [f"{ip}:9092" for ip in release.pod_ips("console")]}
    assert jobs["wallestars-console"]
    prom = prometheus.start(tmp_path / "prometheus", jobs, [])
    try:
        wait_for("two scrapes", lambda: any(float(r["value"][1]) >= 3 for r in
                 prom.query("count_over_time(up[30s])")["data"]["result"]), timeout=40)  # fmt: skip
        board = json.loads((helmlocal.CHART / "files" / "dashboards" / "overview.json").read_text())
        console = [p for p in board["panels"] if p["title"].startswith("Console:")]
        assert len(console) == 3
        empty = [f"{p['title']} [{t['refId']}]" for p in console for t in p["targets"]
                 if not prom.query(grafana_to_promql(t["expr"]))["data"]["result"]]  # fmt: skip
        assert empty == []
    finally:
        prom.stop()
