"""The browser's network safety, with a real Chromium and the real egress proxy.

The fixture site is on 127.0.0.1 and the Agent's policy allows exactly its address and
port. Canaries listen on another loopback address, on the site's address at another
port, and on ::1; a fake DNS server answers names with loopback, private, metadata and
rebinding addresses. Every hostile URL and page trick below aims at a canary: none may
reach it (counted per TCP connection), and each must be reported as blocked.

Runs the agent's attempt in-process (the same Attempt the Job's process runs); the
end-to-end test through the operator is in test_browser_agent.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import localcluster
import pytest
from wallestars_browser import payloads
from wallestars_browser.runner import Attempt, RunnerSettings

from tests.fake_dns import start_dns
from tests.fixture_site import TRICKS, Canary, Site, start_site

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.requires("chromium")


@dataclass
class World:
    site: Site
    canary: Canary  # 127.0.0.2
    same_host: Canary  # 127.0.0.1, another port than the site's
    v6: Canary  # ::1
    ws: Canary  # 127.0.0.2, only for the websocket trick
    resolver: str
    dns: object

    @property
    def canaries(self) -> list[Canary]:
        return [self.canary, self.same_host, self.v6, self.ws]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    # The egress proxy the agent starts: the one hack/build-tools.sh built.
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    monkeypatch.setenv("WALLESTARS_SMOKESCREEN", str(smokescreen))
    canary = await Canary("127.0.0.2").start()
    same_host = await Canary("127.0.0.1").start()
    v6 = await Canary("::1").start()
    ws = await Canary("127.0.0.2").start()
    site, runner = await start_site(canary_url=f"{canary.url}/c/service-worker-fetch")
    dns, resolver = await start_dns({
        "canary.test": [["127.0.0.2"]],
        "localhost.test": [["127.0.0.1"]],
        "localhost": [["127.0.0.1"]],  # as a cluster's DNS (or /etc/hosts) would answer
        "metadata.google.internal": [["169.254.169.254"]],
        "private.test": [["10.1.2.3"]],
        "v6.test": [["::1"]],
        "mapped.test": [["::ffff:127.0.0.2"]],
        # Rebinding: public first, loopback on the next lookup.
        "rebind.test": [["203.0.113.7"], ["127.0.0.2"]],
        # The fixture site under an allowed and a not-allowed name (host allowlists).
        "site.test": [["127.0.0.1"]],
        "other.test": [["127.0.0.1"]],
    })  # fmt: skip
    yield World(site, canary, same_host, v6, ws, resolver, dns)
    await runner.cleanup()
    for c in (canary, same_host, v6, ws):
        assert c.server is not None
        c.server.close()


def hostile(w: World) -> list[tuple[str, str]]:
    """(case, URL) for direct navigations; every URL carries its case as a path marker."""
    p, p1, p6 = w.canary.port, w.same_host.port, w.v6.port
    direct = {
        "ipv4": f"http://127.0.0.2:{p}",
        "decimal": f"http://2130706434:{p}",
        "hex": f"http://0x7f000002:{p}",
        "octal": f"http://0177.0.0.2:{p}",
        "short": f"http://127.2:{p}",
        "dotted-hex": f"http://0x7f.0x0.0x0.0x2:{p}",
        "zero-padded": f"http://127.000.000.002:{p}",
        "userinfo": f"http://{w.site.host}:{w.site.port}@127.0.0.2:{p}",
        "same-host-other-port": f"http://127.0.0.1:{p1}",
        "localhost": f"http://localhost:{p1}",
        "localhost-dot": f"http://localhost.:{p1}",
        "localhost-upper": f"http://LOCALHOST:{p1}",
        "zero-address": f"http://0.0.0.0:{p1}",
        "zero-short": f"http://0:{p1}",
        "ipv6-loopback": f"http://[::1]:{p6}",
        "ipv6-long": f"http://[0:0:0:0:0:0:0:1]:{p6}",
        "ipv6-any": f"http://[::]:{p6}",
        "ipv4-mapped": f"http://[::ffff:127.0.0.2]:{p}",
        "ipv4-mapped-hex": f"http://[::ffff:7f00:2]:{p}",
        "nat64": f"http://[64:ff9b::7f00:2]:{p}",
        "6to4": f"http://[2002:7f00:2::1]:{p}",
        "dns-loopback": f"http://canary.test:{p}",
        "dns-localhost": f"http://localhost.test:{p1}",
        "dns-v6": f"http://v6.test:{p6}",
        "dns-mapped": f"http://mapped.test:{p}",
        "dns-rebinding": f"http://rebind.test:{p}",
        "dns-rebinding-again": f"http://rebind.test:{p}",
        "https-loopback": f"https://127.0.0.2:{p}",
        "metadata": "http://169.254.169.254/latest/meta-data",
        "metadata-v6": "http://[fd00:ec2::254]/latest/meta-data",
        "metadata-gcp": "http://metadata.google.internal/computeMetadata/v1",
        "metadata-ecs": "http://169.254.170.2/v2/credentials",
        "metadata-alibaba": "http://100.100.100.200/latest/meta-data",
        "link-local-v6": "http://[fe80::1]/",
        "private-10": "http://10.0.0.1/",
        "private-172": "http://172.16.0.1/",
        "private-192": "http://192.168.1.1/",
        "cgnat": "http://100.64.0.1/",
        "dns-private": "http://private.test/",
        "ula-v6": "http://[fd12:3456::1]/",
    }
    cases = [(name, f"{url}/c/{name}") for name, url in direct.items()]
    # Redirect chains on the allowed site that end at the canary.
    for hops in range(1, 11):
        target = quote(f"{w.canary.url}/c/redirect-{hops}", safe="")
        cases.append((f"redirect-{hops}", f"{w.site.url}/redirect?hops={hops}&to={target}"))
    return cases


def tricks(w: World) -> list[tuple[str, str]]:
    """(case, page URL) for pages that reach for the canary without navigating to it."""
    out = []
    for kind in TRICKS:
        canary = w.ws if kind == "websocket" else w.canary
        target = quote(f"{canary.url}/c/trick-{kind}", safe="")
        out.append((f"trick-{kind}", f"{w.site.url}/trick/{kind}?target={target}"))
    return out


async def test_hostile_urls_and_page_tricks_never_reach_a_canary(world: World) -> None:
    w = world
    direct, page_tricks = hostile(w), tricks(w)
    assert len(direct) + len(page_tricks) >= 60
    steps: list[dict[str, object]] = []
    for name, url in direct:
        steps.append({"action": "goto", "url": url, "name": name, "continueOnFailure": True,
                      "timeoutMs": 10_000})  # fmt: skip
    # A refused redirect's last hop can still be settling when goto returns: let it.
    steps.append({"action": "wait", "timeoutMs": 1000, "continueOnFailure": True})
    for name, url in page_tricks:
        steps.append({"action": "goto", "url": url, "name": name, "continueOnFailure": True})
        steps.append({"action": "wait", "timeoutMs": 400, "continueOnFailure": True})
    steps.append({"action": "goto", "url": f"{w.site.url}/", "name": "site-still-reachable"})
    payload = {"steps": steps}
    settings = RunnerSettings(
        task_type="e2e-test",
        payload=json.dumps(payload),
        network=json.dumps({"allowPrivateAddresses": [f"127.0.0.1:{w.site.port}"]}),
        resolver=w.resolver,
        chromium=CHROMIUM,
        timeout_seconds=600,
    )
    attempt = Attempt(settings)
    outcome = await attempt.run(payloads.parse("e2e-test", payload))

    hits = {c.url: c.hits for c in w.canaries if c.hits}
    assert hits == {}, f"the canary was reached: {hits}"

    by_name = {s["name"]: s for s in outcome.data["steps"]}
    blocked_urls = " ".join(b.url for b in attempt.guard.blocked)
    denied_hosts = {d["host"] for d in attempt.denied}
    unreported = []
    for name, _ in direct:
        step = by_name[name]
        ok = step["status"] == "failed" and "refused by the egress policy" in step.get("error", "")
        if not ok and f"/c/{name}" not in blocked_urls:
            unreported.append((name, step))
    for name, _ in page_tricks:
        kind = name.removeprefix("trick-")
        if kind == "websocket":
            reported = f"127.0.0.2:{w.ws.port}" in denied_hosts
        elif kind in ("file-iframe", "file-location"):
            reported = "file:///etc/passwd" in blocked_urls
        elif kind == "service-worker":
            # Service workers are refused outright (no registration, so no request at all).
            reported = by_name[name]["status"] == "passed"
        else:
            reported = f"/c/{name}" in blocked_urls
        if not reported:
            unreported.append((name, by_name[name]))
    assert unreported == [], (
        f"not reported as blocked: {unreported}\nblocked: {blocked_urls}\ndenied: {denied_hosts}"
    )
    # The allowed site itself stayed reachable through the same proxy.
    assert by_name["site-still-reachable"]["status"] == "passed", by_name["site-still-reachable"]


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
