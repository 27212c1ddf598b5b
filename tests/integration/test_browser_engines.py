"""Every browser task type on every engine this machine has: Chromium (Debian's) and a
stock Firefox (Debian's firefox-esr, driven over WebDriver BiDi through bidi_shim.py).

The attempt runs in-process (the same Attempt the Job's process runs, the real egress
proxy in front) against the fixture site; the same through the operator and a container
of the browser image is test_browser_agent.py (Chromium and a Firefox Agent). An engine
the image lacks (WebKit here) fails at once as BrowserUnavailable.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import localcluster
import pytest
from PIL import Image
from wallestars_browser import payloads
from wallestars_browser.runner import Attempt, RunnerSettings
from wallestars_browser.selftest import probe
from wallestars_browser.tasks import Outcome, TaskError

from tests.fixture_site import Site, start_site

pytestmark = pytest.mark.requires("chromium", "firefox")
ENGINES = ["chromium", "firefox"]


@pytest.fixture
async def site(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    monkeypatch.setenv("WALLESTARS_SMOKESCREEN", str(smokescreen))
    s, runner = await start_site()
    yield s
    await runner.cleanup()


def settings(engine: str, site: Site, type_: str, payload: dict[str, Any],
             **extra: Any) -> RunnerSettings:  # fmt: skip
    return RunnerSettings(
        task_type=type_, payload=json.dumps(payload), browser=engine,
        network=json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{site.port}"]}),
        chromium=shutil.which("chromium"), firefox=shutil.which("firefox-esr"),
        timeout_seconds=120, **extra)  # fmt: skip


async def attempt(engine: str, site: Site, type_: str, payload: dict[str, Any],
                  **extra: Any) -> tuple[Outcome, dict[str, bytes]]:  # fmt: skip
    a = Attempt(settings(engine, site, type_, payload, **extra))
    outcome = await a.run(payloads.parse(type_, payload))
    return outcome, {name: content for name, content, _ in a.evidence.files}


def png_size(raw: bytes) -> tuple[int, int]:
    im = Image.open(io.BytesIO(raw))
    im.load()
    return im.size


@pytest.mark.parametrize("engine", ENGINES)
async def test_screenshot_in_the_agents_viewport_unless_the_task_has_its_own(
    site: Site, engine: str
) -> None:
    agent_default = json.dumps({"width": 1000, "height": 700})
    out, files = await attempt(engine, site, "screenshot", {"url": f"{site.url}/visual"},
                               viewport=agent_default)  # fmt: skip
    assert out.failure is None, out
    assert png_size(files["screenshot.png"]) == (1000, 700)  # the Agent's default
    out, files = await attempt(engine, site, "screenshot", {
        "url": f"{site.url}/visual", "selector": "#box",
        "viewport": {"width": 800, "height": 600, "deviceScaleFactor": 2}},
        viewport=agent_default)  # fmt: skip
    assert out.failure is None, out
    w, h = png_size(files["screenshot.png"])
    assert w == 400 and 200 <= h <= 202  # the task's own: the 200x100 box at scale 2
    out, files = await attempt(engine, site, "screenshot", {"url": f"{site.url}/visual"})
    assert png_size(files["screenshot.png"]) == (1280, 800)  # neither: the built-in default


@pytest.mark.parametrize("engine", ENGINES)
async def test_scrape_follows_every_page(site: Site, engine: str) -> None:
    out, _ = await attempt(engine, site, "scrape", {
        "url": f"{site.url}/list", "selectors": {"title": "h1"},
        "fields": {"items": {"selector": ".item", "all": True},
                   "ids": {"selector": ".item", "attribute": "data-id", "all": True}},
        "pagination": {"nextSelector": "#next", "maxPages": 5}})  # fmt: skip
    assert out.failure is None, out
    d = out.data["data"]
    assert d["items"] == [f"Item {i}" for i in range(1, 8)]
    assert d["ids"] == [str(i) for i in range(1, 8)]
    assert d["title"] == ["List page 1", "List page 2", "List page 3"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_e2e_steps_screenshot_and_trace(site: Site, engine: str) -> None:
    out, files = await attempt(engine, site, "e2e-test", {"url": f"{site.url}/form", "steps": [
        {"action": "fill", "selector": "#name", "value": "Ada"},
        {"action": "select", "selector": "#plan", "value": "pro"},
        {"action": "click", "selector": "#submit"},
        {"action": "waitForUrl", "value": "**/form/done*"},
        {"action": "expectText", "selector": "#thanks", "value": "Thanks, Ada"},
        {"action": "expectCount", "selector": "#plan", "count": 1},
        {"action": "waitForNetworkIdle"},
        {"action": "screenshot", "name": "done"}]})  # fmt: skip
    assert out.failure is None, out
    assert [s["status"] for s in out.data["steps"]] == ["passed"] * 8
    png_size(files["step-8.png"])
    with zipfile.ZipFile(io.BytesIO(files["trace.zip"])) as z:
        assert z.testzip() is None and any(n.endswith(".trace") for n in z.namelist())


@pytest.mark.parametrize("engine", ENGINES)
async def test_performance_measures_what_the_engine_can_and_names_what_it_cannot(
    site: Site, engine: str
) -> None:
    out, _ = await attempt(engine, site, "performance", {
        "url": f"{site.url}/heavy", "thresholds": {"ttfb": 10_000, "load": 60_000, "tbt": 100}})  # fmt: skip
    m = out.data["metrics"]
    assert m["ttfb"] > 0 and m["fcp"] > 0 and m["lcp"] > 0
    assert m["load"] >= m["domContentLoaded"] > 0
    budgets = out.data["budgets"]
    assert budgets["ttfb"]["passed"] is True
    if engine == "chromium":
        # The page's 300 ms long task breaks the TBT budget; its layout shift counts.
        assert m["tbt"] >= 200 and m["cls"] > 0 and budgets["tbt"]["passed"] is False
        assert out.failure is not None and "tbt" in out.failure
        assert "unavailable" not in out.data
    else:
        # Firefox has no long-task or layout-shift entries: said, not guessed as 0.
        assert set(out.data["unavailable"]) == {"tbt", "cls"}
        assert "tbt" not in m and "cls" not in m
        assert budgets["tbt"]["passed"] is None and "longtask" in budgets["tbt"]["unavailable"]
        assert out.failure is None


@pytest.mark.parametrize("engine", ENGINES)
async def test_accessibility_passes_a_clean_page_and_names_violations(
    site: Site, engine: str
) -> None:
    ok, _ = await attempt(engine, site, "accessibility", {"url": f"{site.url}/accessible"})
    assert ok.failure is None and ok.data["counts"]["total"] == 0, ok.data
    bad, files = await attempt(engine, site, "accessibility", {"url": f"{site.url}/inaccessible"})
    rules = {v["id"] for v in bad.data["violations"]}
    assert bad.failure is not None and {"image-alt", "button-name"} <= rules, rules
    assert json.loads(files["axe-results.json"])["violations"]


async def test_an_engine_the_image_lacks_fails_at_once_without_retry(site: Site) -> None:
    """WebKit needs Playwright's own build, which this machine does not have."""
    with pytest.raises(TaskError) as e:
        await attempt("webkit", site, "screenshot", {"url": f"{site.url}/visual"})
    assert e.value.code == "BrowserUnavailable" and e.value.retryable is False
    assert "no webkit" in e.value.message


@pytest.mark.parametrize("engine", ["chromium", "firefox", "webkit"])
async def test_the_health_probe_says_which_engine_runs_or_why_not(site: Site, engine: str) -> None:
    v = await probe(settings(engine, site, "screenshot", {}))
    if engine == "webkit":
        assert v["healthy"] is False and v["reason"] == "BrowserUnavailable", v
        assert "no webkit" in v["message"]
    else:
        assert v["healthy"] is True, v
        assert v["checks"] == {f"{engine} renders": True, "metadata address refused": True}
        assert v["engine"] == engine and v["version"] and engine in v["message"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_basic_auth_and_cookies_reach_the_page(site: Site, engine: str) -> None:
    """basicAuth (every request of the page) and cookies (a session), as a Secret's values
    arrive once folded in; the fixture's /private needs the one and shows the other."""
    from tests.fixture_site import PRIVATE_PASSWORD, PRIVATE_USER

    out, _ = await attempt(engine, site, "e2e-test", {
        "url": f"{site.url}/private",
        "basicAuth": {"username": PRIVATE_USER, "password": PRIVATE_PASSWORD},
        "cookies": [{"name": "session", "value": "sess-42"}],
        "steps": [{"action": "expectText", "selector": "#private", "value": "Welcome"},
                  {"action": "expectText", "selector": "#session", "value": "session=sess-42"}]})  # fmt: skip
    assert out.failure is None, out.data
    # Wrong credentials: the page answers 401 (Chromium fails the navigation itself,
    # Firefox shows the empty 401 page): the credentials were really used.
    wrong_payload = {"url": f"{site.url}/private",
                     "basicAuth": {"username": PRIVATE_USER, "password": "nope"},
                     "steps": [{"action": "expectText", "selector": "#private", "value": "Welcome",
                                "timeoutMs": 2000}]}  # fmt: skip
    if engine == "chromium":
        with pytest.raises(TaskError, match="ERR_HTTP_RESPONSE_CODE_FAILURE"):
            await attempt(engine, site, "e2e-test", wrong_payload)
    else:
        wrong, _ = await attempt(engine, site, "e2e-test", wrong_payload)
        assert wrong.failure is not None
