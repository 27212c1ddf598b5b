"""How the browser is started and what a page may do: pure option builders and the guard.

Everything leaves through the egress proxy (egress.py); these options make sure nothing
goes around it: the browser resolves no host names itself (the proxy does), loopback goes
through the proxy too, WebRTC may not open its own UDP sockets, background services
(updates, telemetry, safe browsing, captive-portal pings) stay off, service workers and
downloads are refused, and non-web schemes are aborted in the page.

Engines: Chromium (Debian's here, Playwright's in its image); Firefox, either a stock
Firefox over WebDriver BiDi (Debian's firefox-esr here, through bidi_shim.py) or
Playwright's own build (its image); WebKit only where Playwright's build is installed.
An engine the image lacks is BrowserUnavailable: the user's choice, not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Request, Route

from .payloads import BasicAuth, Cookie, Viewport

ENGINES = ("chromium", "firefox", "webkit")
page_log = logging.getLogger("wallestars.page")

# Chromium's switches: no own DNS (the proxy resolves), no side channels.
CHROMIUM_ARGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    # No --disable-dev-shm-usage: the Job mounts a memory emptyDir of 1 GiB on /dev/shm
    # (manifests.AttemptConfig.dshm_limit), so shared memory stays in memory, not /tmp.
)
# Firefox's equivalents, on top of what Playwright already sets in the profile. The proxy
# itself is set here too (firefox_proxy_prefs), not with Playwright's `proxy` option: over
# WebDriver BiDi that sets only the http proxy, and https would go direct.
FIREFOX_PREFS: dict[str, bool | int | str] = {
    "network.proxy.allow_hijacking_localhost": True,  # loopback through the proxy too
    "network.proxy.no_proxies_on": "",
    "network.proxy.share_proxy_settings": True,
    "network.proxy.socks_remote_dns": True,
    "browser.send_pings": False,
    "network.trr.mode": 5,  # no DNS over HTTPS of its own
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.http3.enable": False,  # no QUIC around an HTTP proxy
    "network.captive-portal-service.enabled": False,
    "media.peerconnection.enabled": False,  # WebRTC: no UDP of its own
    "media.peerconnection.ice.proxy_only": True,
    "dom.serviceWorkers.enabled": False,
    "browser.download.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "geo.provider.network.url": "",
    "extensions.blocklist.enabled": False,
    "services.settings.server": "",
    "browser.region.network.url": "",
    "app.update.auto": False,
}
WEB_SCHEMES = frozenset({"http", "https"})
# How each engine says, on the console only, that it refused a local resource.
REFUSALS = (
    "Not allowed to load local resource",  # Chromium
    "Not allowed to navigate top frame",  # Chromium
    "may not load or link to",  # Firefox
)


class BrowserUnavailable(Exception):
    """The engine asked for is not in this image."""


@dataclass(frozen=True)
class Launch:
    """Which Playwright browser type to start, and from where."""

    engine: str  # chromium | firefox | webkit
    executable: str | None  # None: Playwright's own build of the engine
    bidi: bool = False  # a stock Firefox, driven over WebDriver BiDi


def choose(
    engine: str, chromium: str | None, firefox: str | None, bundled: Callable[[str], bool]
) -> Launch:
    """The launch for `engine` given the browsers this image has (pure but for `bundled`,
    which says whether Playwright's own build of an engine is installed)."""
    if engine == "chromium" and (chromium or bundled("chromium")):
        return Launch("chromium", chromium)
    if engine == "firefox" and firefox:
        return Launch("firefox", firefox, bidi=True)
    if engine in ("firefox", "webkit") and bundled(engine):
        return Launch(engine, None)
    if engine not in ENGINES:
        raise BrowserUnavailable(f"unknown browser {engine!r}; known: {', '.join(ENGINES)}")
    hint = {
        "chromium": "set WALLESTARS_CHROMIUM or use Playwright's image",
        "firefox": "set WALLESTARS_FIREFOX to a Firefox >= 138 or use Playwright's image",
        "webkit": "WebKit needs Playwright's own build (Playwright's image has it)",
    }[engine]
    raise BrowserUnavailable(f"this image has no {engine}: {hint}")


def launch_options(
    launch: Launch, proxy_url: str, relay: str | None = None, debug_port: int | None = None
) -> dict[str, Any]:
    """Playwright's <engine>.launch(...) keyword arguments (pure). `relay` is the BiDi
    relay's executable, needed for a stock Firefox (bidi_shim.launcher); `debug_port`, a
    DevTools port on loopback for Lighthouse (Chromium only; pages cannot reach it: their
    loopback goes through the proxy, which refuses it)."""
    opts: dict[str, Any] = {"headless": True}
    if launch.engine == "chromium":
        # Playwright also forces loopback through the proxy (<-loopback> in the bypass
        # list). The pod is the sandbox: restricted PSS, no user namespaces.
        opts |= {"args": list(CHROMIUM_ARGS), "chromium_sandbox": False,
                 "proxy": {"server": proxy_url}}  # fmt: skip
        if launch.executable:
            opts["executable_path"] = launch.executable
        if debug_port is not None:
            opts["args"] += [f"--remote-debugging-port={debug_port}",
                             "--remote-debugging-address=127.0.0.1"]  # fmt: skip
    elif launch.engine == "firefox":
        opts["firefox_user_prefs"] = FIREFOX_PREFS | firefox_proxy_prefs(proxy_url)
        if launch.bidi:
            if relay is None:
                raise ValueError("a stock Firefox needs the BiDi relay's executable")
            opts |= {"channel": "moz-firefox", "executable_path": relay}
    else:  # WebKit (Playwright's build)
        opts["proxy"] = {"server": proxy_url}
    return opts


def firefox_proxy_prefs(proxy_url: str) -> dict[str, bool | int | str]:
    """Every scheme through the HTTP proxy at `proxy_url` (pure)."""
    u = urlsplit(proxy_url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    return {"network.proxy.type": 1, "network.proxy.http": host, "network.proxy.http_port": port,
            "network.proxy.ssl": host, "network.proxy.ssl_port": port}  # fmt: skip


def context_options(viewport: Viewport | None, auth: BasicAuth | None = None) -> dict[str, Any]:
    v = viewport or Viewport()
    opts: dict[str, Any] = {
        "viewport": {"width": v.width, "height": v.height},
        "device_scale_factor": v.device_scale_factor,
        "service_workers": "block",
        "accept_downloads": False,
        "java_script_enabled": True,
        "ignore_https_errors": False,
    }
    if auth is not None:
        opts["http_credentials"] = {"username": auth.username, "password": auth.password}
    return opts


def cookie_params(cookies: list[Cookie], default_url: str | None) -> list[dict[str, str]]:
    """Playwright's add_cookies(...) entries (pure): each for its URL or the task's."""
    out = []
    for c in cookies:
        url = c.url or default_url
        if url is None:
            raise ValueError(f"cookie {c.name!r} needs a url (the task has none)")
        out.append({"name": c.name, "value": c.value, "url": url})
    return out


@dataclass
class Blocked:
    url: str
    reason: str


@dataclass
class Guard:
    """Aborts non-web schemes and records what the page was refused."""

    blocked: list[Blocked] = field(default_factory=list)
    failed: list[Blocked] = field(default_factory=list)  # other failures, matched later

    async def attach(self, context: BrowserContext) -> None:
        await context.route(lambda url: urlsplit(url).scheme not in WEB_SCHEMES, self._refuse)
        context.on("requestfailed", self._failed)
        context.on("response", self._response)
        context.on("console", self._console)
        context.on("weberror", self._console)

    async def _refuse(self, route: Route) -> None:
        self.blocked.append(Blocked(route.request.url[:512], "scheme not allowed"))
        await route.abort("blockedbyclient")

    def _failed(self, request: Request) -> None:
        failure = request.failure or ""
        if "PROXY" in failure or "TUNNEL" in failure or "BLOCKED" in failure:
            self.blocked.append(Blocked(request.url[:512], failure))
        else:
            # e.g. a cross-origin fetch the proxy refused shows up as a CORS failure
            self.failed.append(Blocked(request.url[:512], failure))

    def correlate(self, denied_hosts: set[str]) -> None:
        """Failed requests to a host the proxy refused were refused, whatever the page saw."""
        for f in self.failed:
            u = urlsplit(f.url)
            netloc = u.netloc.rsplit("@", 1)[-1]
            if netloc in denied_hosts or (u.hostname or "") in denied_hosts:
                self.blocked.append(Blocked(f.url, f"refused by the egress proxy ({f.reason})"))
        self.failed.clear()

    def _response(self, response: Any) -> None:
        # smokescreen answers a refused plain-HTTP request itself with 407 + its error header.
        if response.status == 407 and response.headers.get("x-smokescreen-error"):
            self.blocked.append(
                Blocked(response.url[:512], response.headers["x-smokescreen-error"][:300])
            )

    def _console(self, message: Any) -> None:
        # The browser itself refuses file:, chrome: and top-level data: navigations from a
        # page and says so only on the console.
        text = str(getattr(message, "text", "") or getattr(message, "error", ""))
        kind = getattr(message, "type", "error")  # a page error (weberror) has no type
        if kind in ("error", "warning"):  # into the attempt's log (agent.log)
            page_log.info("page %s: %s", kind, text[:500])
        if any(m in text for m in REFUSALS):
            self.blocked.append(Blocked(text[:512], "refused by the browser"))

    def summary(self, limit: int = 50) -> list[dict[str, str]]:
        return [{"url": b.url, "reason": b.reason} for b in self.blocked[:limit]]
