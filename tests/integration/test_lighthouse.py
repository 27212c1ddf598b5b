"""performance with engine lighthouse: Lighthouse (agent_images/lighthouse/) against the
attempt's own Debian Chromium, behind the attempt's real egress proxy (smokescreen), the
attempt in-process as in test_browser_engines.py.

What the issue makes the condition of shipping it: Lighthouse must not get around the
egress proxy. Shown by a control: a page the Agent's network policy does not allow
fails to load and its canary never sees a connection, while the allowed fixture site is
measured. Lighthouse's own process talks only to the Chromium's DevTools port.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from typing import Any

import localcluster
import pytest
from harness import lighthouse_cli
from wallestars_browser import payloads
from wallestars_browser.runner import Attempt, RunnerSettings
from wallestars_browser.tasks import Outcome, TaskError

from tests.fixture_site import Canary, Site, start_site

pytestmark = pytest.mark.requires("chromium", "firefox")


@pytest.fixture
async def site(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    monkeypatch.setenv("WALLESTARS_SMOKESCREEN", str(smokescreen))
    s, runner = await start_site()
    yield s
    await runner.cleanup()


def cli() -> str:
    path = lighthouse_cli()
    assert path.exists(), f"no Lighthouse at {path}: hack/setup.sh installs it (make setup)"
    return str(path)


async def attempt(site: Site, payload: dict[str, Any], engine: str = "chromium",
                  lighthouse: str | None = None) -> tuple[Attempt, Outcome, dict[str, bytes]]:  # fmt: skip
    s = RunnerSettings(
        task_type="performance", payload=json.dumps(payload), browser=engine,
        network=json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{site.port}"]}),
        chromium=shutil.which("chromium"), firefox=shutil.which("firefox-esr"),
        timeout_seconds=120, lighthouse=lighthouse or cli())  # fmt: skip
    a = Attempt(s)
    out = await a.run(payloads.parse("performance", payload))
    return a, out, {name: content for name, content, _ in a.evidence.files}


async def test_scores_and_web_vitals_with_the_report_as_an_artifact(site: Site) -> None:
    _, out, files = await attempt(site, {
        "url": f"{site.url}/accessible", "engine": "lighthouse",
        "categories": {"performance": 0.5, "accessibility": 0.5},
        "thresholds": {"lcp": 20000, "cls": 0.5, "tbt": 5000}})  # fmt: skip
    assert out.failure is None, out
    report = json.loads(files["lighthouse.json"])
    assert report["lighthouseVersion"] == "13.5.0"
    assert report["finalDisplayedUrl"] == f"{site.url}/accessible"
    lh = out.data["lighthouse"]
    assert set(lh["categories"]) == {"performance", "accessibility", "best-practices", "seo"}
    assert all(0 <= s <= 1 for s in lh["categories"].values())
    assert lh["categories"] == {k: c["score"] for k, c in report["categories"].items()}
    assert lh["formFactor"] == "desktop" and lh["runtimeError"] is None
    m = out.data["metrics"]
    assert m["lcp"] > 0 and m["fcp"] > 0 and m["lcp"] >= m["fcp"] and m["cls"] >= 0
    assert m["lcp"] == round(report["audits"]["largest-contentful-paint"]["numericValue"], 1)
    assert out.data["budgets"]["lcp"] == {"value": m["lcp"], "budget": 20000, "passed": True}
    assert out.data["categoryBudgets"]["accessibility"]["passed"] is True
    assert out.metrics["performanceScore"] == lh["categories"]["performance"]


async def test_budgets_fail_the_task_and_say_which(site: Site) -> None:
    _, out, files = await attempt(site, {
        "url": f"{site.url}/heavy", "engine": "lighthouse", "formFactor": "mobile",
        "categories": {"seo": 1.0}, "thresholds": {"fcp": 1, "load": 100}})  # fmt: skip
    assert out.failure is not None and out.failure.startswith("over budget: fcp ")
    assert out.data["budgets"]["fcp"]["passed"] is False
    # What Lighthouse does not report is neither passed nor failed, and says why.
    assert out.data["budgets"]["load"]["passed"] is None
    assert "Lighthouse does not report it" in out.data["budgets"]["load"]["unavailable"]
    assert out.data["lighthouse"]["formFactor"] == "mobile"
    assert "lighthouse.json" in files  # the report is kept when the budgets fail too


async def test_lighthouse_cannot_get_around_the_egress_proxy(site: Site) -> None:
    """The control: a loopback canary the Agent does not allow. Chromium asks the proxy,
    which refuses; had Lighthouse's page load gone direct, the canary would count it."""
    canary = await Canary("127.0.0.1").start()
    try:
        a = Attempt(RunnerSettings(
            task_type="performance", browser="chromium", chromium=shutil.which("chromium"),
            network=json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{site.port}"]}),
            timeout_seconds=120, lighthouse=cli()))  # fmt: skip
        with pytest.raises(TaskError) as e:
            await a.run(
                payloads.parse("performance", {"url": f"{canary.url}/", "engine": "lighthouse"})
            )
        assert e.value.code == "NavigationFailed", e.value.message  # retried, as every navigation
        assert canary.hits == []
        assert f"127.0.0.1:{canary.port}" in {d["host"] for d in a.denied}
    finally:
        assert canary.server is not None
        canary.server.close()


async def test_lighthouse_needs_chromium_and_its_cli(site: Site) -> None:
    payload = {"url": f"{site.url}/", "engine": "lighthouse"}
    with pytest.raises(TaskError) as e:
        await attempt(site, payload, engine="firefox")
    assert e.value.code == "LighthouseUnavailable" and "Chromium only" in e.value.message
    assert not e.value.retryable
    with pytest.raises(TaskError) as e:
        await attempt(site, payload, lighthouse="/nonexistent/lighthouse/cli/index.js")
    assert e.value.code == "LighthouseUnavailable" and "no Lighthouse" in e.value.message
