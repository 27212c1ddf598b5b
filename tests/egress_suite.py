"""The hostile-address suite of the browser's egress, shared by two runs of it.

tests/integration/test_browser_egress.py runs it with the agent's attempt in the test's
process on the host; test_browser_container.py runs this module in a pod of the browser
image on the real node (``python -m tests.egress_suite``), where the chart's
NetworkPolicy stands behind the egress proxy, and adds canaries outside the pod.

The fixture site is on 127.0.0.1 and the Agent's policy allows exactly its address and
port. Canaries listen on another loopback address, on the site's address at another
port, and on ::1; a fake DNS server answers names with loopback, private, metadata and
rebinding addresses. Every hostile URL and page trick aims at a canary: none may reach
it (counted per TCP connection), and each must be reported as blocked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.fake_dns import FakeDNS, start_dns
from tests.fixture_site import TRICKS, Canary, Site, start_site

DNS = {
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
}


@dataclass
class World:
    site: Site
    runner: web.AppRunner
    canary: Canary  # 127.0.0.2
    same_host: Canary  # 127.0.0.1, another port than the site's
    v6: Canary  # ::1
    ws: Canary  # 127.0.0.2, only for the websocket trick
    resolver: str
    dns: FakeDNS

    @property
    def canaries(self) -> list[Canary]:
        return [self.canary, self.same_host, self.v6, self.ws]

    async def close(self) -> None:
        await self.runner.cleanup()
        for c in self.canaries:
            assert c.server is not None
            c.server.close()


async def open_world(extra_names: dict[str, list[list[str]]] | None = None) -> World:
    canary = await Canary("127.0.0.2").start()
    same_host = await Canary("127.0.0.1").start()
    v6 = await Canary("::1").start()
    ws = await Canary("127.0.0.2").start()
    site, runner = await start_site(canary_url=f"{canary.url}/c/service-worker-fetch")
    dns, resolver = await start_dns({**DNS, **(extra_names or {})})
    return World(site, runner, canary, same_host, v6, ws, resolver, dns)


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


@dataclass
class Report:
    """What one run of the suite saw, as JSON can carry it out of a pod."""

    direct: list[tuple[str, str]]
    tricks: list[tuple[str, str]]
    ws: str  # host:port of the websocket canary
    hits: dict[str, int]  # canary URL -> connections that reached it
    steps: dict[str, dict[str, Any]]  # by step name
    blocked_urls: str  # what the agent's guard refused, space-separated
    denied_hosts: list[str]  # what the egress proxy refused
    extra: dict[str, Any] = field(default_factory=dict)
    engine: str = "chromium"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Report:
        d = json.loads(text)
        d["direct"] = [tuple(c) for c in d["direct"]]
        d["tricks"] = [tuple(c) for c in d["tricks"]]
        return cls(**d)


def unreported(r: Report) -> list[tuple[str, dict[str, Any]]]:
    """The cases the agent did not report as blocked (each must be)."""
    out = []
    for name, _ in r.direct:
        step = r.steps[name]
        ok = step["status"] == "failed" and "refused by the egress policy" in step.get("error", "")
        if not ok and f"/c/{name}" not in r.blocked_urls:
            out.append((name, step))
    for name, _ in r.tricks:
        kind = name.removeprefix("trick-")
        if kind == "websocket":
            reported = r.ws in r.denied_hosts
        elif kind in ("file-iframe", "file-location"):
            reported = "file:///etc/passwd" in r.blocked_urls
        elif kind == "ping" and r.engine == "firefox":
            # Firefox sends no hyperlink-auditing pings (browser.send_pings is off).
            reported = r.steps[name]["status"] == "passed"
        elif kind == "service-worker":
            # Service workers are refused outright (no registration, so no request at all).
            reported = r.steps[name]["status"] == "passed"
        else:
            reported = f"/c/{name}" in r.blocked_urls
        if not reported:
            out.append((name, r.steps[name]))
    return out


async def run(
    w: World, more: list[tuple[str, str]] | None = None, engine: str = "chromium"
) -> Report:
    """Every hostile URL (and ``more``: (case, URL) aimed at canaries elsewhere) and every
    trick page in one e2e-test attempt, then the allowed site once more."""
    from wallestars_browser import payloads
    from wallestars_browser.runner import Attempt, RunnerSettings

    direct, page_tricks = hostile(w) + (more or []), tricks(w)
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
        browser=engine,
        chromium=shutil.which("chromium"),  # Debian's here; None: Playwright's own
        firefox=shutil.which("firefox-esr"),
        timeout_seconds=600,
    )
    attempt = Attempt(settings)
    outcome = await attempt.run(payloads.parse("e2e-test", payload))
    return Report(
        direct=direct,
        tricks=page_tricks,
        ws=f"127.0.0.2:{w.ws.port}",
        hits={c.url: len(c.hits) for c in w.canaries if c.hits},
        steps={s["name"]: s for s in outcome.data["steps"]},
        blocked_urls=" ".join(b.url for b in attempt.guard.blocked),
        denied_hosts=sorted({d["host"] for d in attempt.denied}),
        engine=engine,
    )


async def raw_connect(host: str, port: int) -> str:
    """A plain TCP connection, no proxy: "connected", or how it failed (3 s at most)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return type(e).__name__
    writer.close()
    return "connected"


async def in_pod(
    outside: dict[str, str], names: dict[str, list[list[str]]], raw: list[str]
) -> Report:
    """The suite in a pod: the world on the pod's own loopback, plus ``outside`` (case ->
    URL at a canary beyond the pod; ``names`` for the fake DNS), and a plain connection
    to each ``raw`` host:port, which only the NetworkPolicy can stop."""
    w = await open_world(names)
    try:
        report = await run(w, [(name, f"{url}/c/{name}") for name, url in outside.items()])
    finally:
        await w.close()
    for hostport in raw:
        host, port = hostport.rsplit(":", 1)
        report.extra[hostport] = await raw_connect(host, int(port))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--outside", default="{}", help="JSON: case -> http://host:port")
    ap.add_argument("--names", default="{}", help="JSON: more names for the fake DNS")
    ap.add_argument("--raw", default="[]", help="JSON: host:port to connect to without proxy")
    a = ap.parse_args()
    report = asyncio.run(in_pod(json.loads(a.outside), json.loads(a.names), json.loads(a.raw)))
    print(report.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
