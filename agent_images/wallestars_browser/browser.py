"""How Chromium is started and what a page may do: pure option builders and the guard.

Everything leaves through the egress proxy (egress.py); these options make sure nothing
goes around it: Chromium resolves no host names itself, WebRTC may not open its own UDP
sockets, background services (updates, sync, safe browsing pings) stay off, service
workers and downloads are refused, and non-web schemes are aborted in the page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Request, Route

from .payloads import Viewport

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
WEB_SCHEMES = frozenset({"http", "https"})
CHROMIUM_REFUSALS = ("Not allowed to load local resource", "Not allowed to navigate top frame")


def launch_options(proxy_url: str, executable: str | None) -> dict[str, Any]:
    """Playwright's chromium.launch(...) keyword arguments (pure)."""
    opts: dict[str, Any] = {
        "headless": True,
        "args": list(CHROMIUM_ARGS),
        # Playwright also forces loopback through the proxy (<-loopback> in the bypass list).
        "proxy": {"server": proxy_url},
        "chromium_sandbox": False,  # the pod is the sandbox: restricted PSS, no user namespaces
    }
    if executable:
        opts["executable_path"] = executable
    return opts


def context_options(viewport: Viewport | None) -> dict[str, Any]:
    v = viewport or Viewport()
    return {
        "viewport": {"width": v.width, "height": v.height},
        "device_scale_factor": v.device_scale_factor,
        "service_workers": "block",
        "accept_downloads": False,
        "java_script_enabled": True,
        "ignore_https_errors": False,
    }


def default_executable() -> str | None:
    """WALLESTARS_CHROMIUM, else Playwright's own browser (as in its official image)."""
    return os.environ.get("WALLESTARS_CHROMIUM") or None


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
        # Chromium itself refuses file:, chrome: and top-level data: navigations from a page
        # and says so only on the console.
        text = str(getattr(message, "text", "") or getattr(message, "error", ""))
        if any(m in text for m in CHROMIUM_REFUSALS):
            self.blocked.append(Blocked(text[:512], "refused by Chromium"))

    def summary(self, limit: int = 50) -> list[dict[str, str]]:
        return [{"url": b.url, "reason": b.reason} for b in self.blocked[:limit]]
