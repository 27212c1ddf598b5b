"""The browser's network safety, with a real Chromium and the real egress proxy.

The hostile-address suite (tests/egress_suite.py) with the agent's attempt in-process
(the same Attempt the Job's process runs); the same suite in a container of the browser
image, behind the chart's NetworkPolicy, is in test_browser_container.py, and the
end-to-end test through the operator in test_browser_agent.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator

import localcluster
import pytest
from wallestars_browser import payloads
from wallestars_browser.runner import Attempt, RunnerSettings

from tests import egress_suite
from tests.egress_suite import World

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.requires("chromium", "firefox")


# The DNS-rebinding case answers first with a documentation address (TEST-NET-3), which
# smokescreen, judging it public, really connects to: rejected here, so that no packet of
# the test leaves this machine.
NEVER_OUT = ["OUTPUT", "-d", "203.0.113.0/24", "-j", "REJECT"]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    # The egress proxy the agent starts: the one hack/build-tools.sh built.
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    monkeypatch.setenv("WALLESTARS_SMOKESCREEN", str(smokescreen))
    added = (
        subprocess.run(["iptables", "-w", "-C", *NEVER_OUT], capture_output=True).returncode != 0
    )
    if added:
        subprocess.run(["iptables", "-w", "-I", *NEVER_OUT], check=True, capture_output=True)
    w = await egress_suite.open_world()
    try:
        yield w
    finally:
        await w.close()
        if added:
            subprocess.run(["iptables", "-w", "-D", *NEVER_OUT], check=False, capture_output=True)


@pytest.mark.parametrize("engine", ["chromium", "firefox"])
async def test_hostile_urls_and_page_tricks_never_reach_a_canary(world: World, engine: str) -> None:
    report = await egress_suite.run(world, engine=engine)
    assert len(report.direct) + len(report.tricks) >= 60
    assert report.hits == {}, f"the canary was reached: {report.hits}"
    missing = egress_suite.unreported(report)
    assert missing == [], (
        f"not reported as blocked: {missing}\nblocked: {report.blocked_urls}\n"
        f"denied: {report.denied_hosts}"
    )
    # The allowed site itself stayed reachable through the same proxy.
    site = report.steps["site-still-reachable"]
    assert site["status"] == "passed", site


async def test_an_agents_host_allowlist_refuses_every_other_host(world: World) -> None:
    """allowedHosts: the site by its allowed name loads; the same address under another
    name is refused by the ACL, before any address check could allow it."""
    w = world
    payload = {"steps": [
        {"action": "goto", "url": f"http://site.test:{w.site.port}/", "name": "allowed"},
        {"action": "expectText", "selector": "#intro", "value": "Hello"},
        {"action": "goto", "url": f"http://other.test:{w.site.port}/", "name": "other"},
    ]}  # fmt: skip
    network = {"allowedHosts": ["site.test"], "allowPrivateAddresses": [f"127.0.0.1:{w.site.port}"]}
    attempt = Attempt(RunnerSettings(task_type="e2e-test", payload=json.dumps(payload),
                                     network=json.dumps(network), resolver=w.resolver,
                                     chromium=CHROMIUM, timeout_seconds=120))  # fmt: skip
    outcome = await attempt.run(payloads.parse("e2e-test", payload))
    steps = {s["name"]: s for s in outcome.data["steps"]}
    assert steps["allowed"]["status"] == "passed", steps["allowed"]
    assert steps["2. expectText"]["status"] == "passed", steps
    assert steps["other"]["status"] == "failed"
    assert "refused by the egress policy" in steps["other"]["error"], steps["other"]
