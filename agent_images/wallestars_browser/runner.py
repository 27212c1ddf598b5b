"""One attempt of a browser task, from the environment the operator gives its Job.

payload check (before any browser) -> egress proxy -> Chromium -> the task -> artifacts
-> final callback. SIGTERM (the Job deleted on cancel, or its deadline) stops the step in
flight, keeps what evidence there is and reports Cancelled or Timeout within the grace
period. Exit 0 means the final callback was acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from wallestars_sdk import AgentClient
from wallestars_sdk import secrets as task_secrets
from wallestars_sdk.client import CallbackRejected
from wallestars_sdk.protocol import Artifact

from . import bidi_shim, payloads
from .browser import (
    BrowserUnavailable,
    Guard,
    choose,
    context_options,
    cookie_params,
    launch_options,
)
from .egress import EgressProxy, NetworkPolicy
from .tasks import Evidence, Outcome, Run, TaskError, task

log = logging.getLogger("wallestars.browser")

ATTEMPT_LOG = "agent.log"  # wallestars_api.lifecycle links it from the attempt's record
LOG_TAIL_BYTES = 64 * 1024
INLINE_LIMIT = 24 * 1024  # status keeps ~32 KiB inline; the rest goes to result.json
STOP_MARGIN_SECONDS = 4.0  # finish our own timeout this early, to upload before the Job's
# A stopped task gets this long to save its evidence (the Job's pods get 30 s of grace).
EVIDENCE_SECONDS = 15.0


class RunnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLESTARS_", extra="ignore")

    task_type: str
    payload: str = "{}"
    timeout_seconds: float = 300
    network: str = "{}"  # the Agent's spec.browser.network as JSON
    deny_cidrs: str = ""  # the cluster's ranges, comma-separated (installation-wide)
    resolver: str = ""  # DNS servers for the egress proxy (IP:port, comma-separated)
    browser: str = "chromium"  # the Agent's spec.browser.browser
    viewport: str = ""  # the Agent's spec.browser.viewport as JSON: the tasks' default
    chromium: str | None = None  # Debian's chromium here; Playwright's own in its image
    firefox: str | None = None  # Debian's firefox-esr here; Playwright's own in its image
    # Lighthouse's cli (agent_images/lighthouse/), for performance tasks with engine lighthouse
    lighthouse: str | None = None
    started: float = Field(default_factory=time.time)


@dataclass
class Attempt:
    settings: RunnerSettings
    evidence: Evidence = field(default_factory=Evidence)
    guard: Guard = field(default_factory=Guard)
    timings: dict[str, float] = field(default_factory=dict)
    denied: list[dict[str, str]] = field(default_factory=list)
    agent: AgentClient | None = None  # None: run without callbacks (tests, benchmarks)
    stop: asyncio.Event | None = None
    log: LogTail | None = None  # the attempt's log, uploaded as agent.log

    async def progress(self, percent: int) -> None:
        """A running callback; one that answers `cancel` stops the attempt like SIGTERM."""
        if self.agent is None:
            return
        try:
            await self.agent.progress(percent)
        except (CallbackRejected, OSError, TimeoutError) as e:
            log.warning("progress callback not delivered: %s", e)
        if self.agent.cancelled and self.stop is not None:
            self.stop.set()

    async def run(self, payload: payloads.Model) -> Outcome:
        s = self.settings
        policy = NetworkPolicy.model_validate(json.loads(s.network or "{}"))
        deny = [c.strip() for c in s.deny_cidrs.split(",") if c.strip()]
        resolvers = [r.strip() for r in s.resolver.split(",") if r.strip()]
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            async with (
                EgressProxy(policy, Path(work), deny, resolvers) as proxy,
                async_playwright() as pw,
            ):
                # The browser starts while the proxy comes up and the task's module is imported.
                # Lighthouse drives this same Chromium over a DevTools port on loopback.
                debug_port = free_port() if wants_lighthouse(payload, s.browser) else None
                starting = start_browser(pw, s, Path(work), proxy.url, debug_port)
                browser, fn, _ = await asyncio.gather(
                    starting, asyncio.to_thread(task, s.task_type), proxy.ready()
                )
                try:
                    viewport = viewport_for(payload, agent_viewport(s.viewport))
                    auth = getattr(payload, "basic_auth", None)
                    context = await browser.new_context(**context_options(viewport, auth))
                    cookies = getattr(payload, "cookies", [])
                    if cookies:
                        url = getattr(payload, "url", None)
                        await context.add_cookies(cookie_params(cookies, url))
                    await self.guard.attach(context)
                    self.timings["launchMs"] = ms(t0)
                    await self.progress(10)
                    t1 = time.monotonic()
                    budget = max(1.0, s.timeout_seconds - STOP_MARGIN_SECONDS) * 1000
                    run = Run(context, self.evidence, proxy.url, budget, self.progress,
                              engine=s.browser, debug_port=debug_port, lighthouse=s.lighthouse,
                              read_baseline=self.agent.read_baseline if self.agent else None)  # fmt: skip
                    try:
                        return await fn(run, payload)
                    except asyncio.CancelledError:
                        await self.last_look(context)
                        raise
                    finally:
                        self.timings["pageMs"] = ms(t1)
                finally:
                    self.denied = [{"host": d.host, "reason": d.reason} for d in proxy.denials()]
                    self.guard.correlate({d["host"] for d in self.denied})
                    with contextlib.suppress(Exception):
                        await browser.close()

    async def last_look(self, context: Any) -> None:
        """A screenshot of where a stopped task was, if the page still answers."""
        for i, page in enumerate(context.pages):
            with contextlib.suppress(Exception):
                png = await asyncio.wait_for(page.screenshot(timeout=2000), 3)
                self.evidence.add(f"stopped-{i + 1}.png", png, "image/png")


def wants_lighthouse(payload: payloads.Model, engine: str) -> bool:
    return engine == "chromium" and getattr(payload, "engine", None) == "lighthouse"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_browser(
    pw: Any, s: RunnerSettings, work: Path, proxy_url: str, debug_port: int | None = None
) -> Any:
    """The Agent's engine, launched behind the proxy; TaskError if the image lacks it."""
    try:
        launch = choose(s.browser, s.chromium, s.firefox,
                        lambda e: Path(getattr(pw, e).executable_path).exists())  # fmt: skip
    except BrowserUnavailable as e:
        raise TaskError("BrowserUnavailable", str(e), False) from e
    relay = str(bidi_shim.launcher(work, launch.executable)) if launch.bidi else None
    browser_type = getattr(pw, launch.engine)
    return await browser_type.launch(**launch_options(launch, proxy_url, relay, debug_port))


def agent_viewport(raw: str) -> payloads.Viewport | None:
    """The Agent's default viewport (WALLESTARS_VIEWPORT), if it set one."""
    return payloads.Viewport.model_validate_json(raw) if raw.strip() else None


def viewport_for(
    payload: payloads.Model, agent: payloads.Viewport | None
) -> payloads.Viewport | None:
    """The task's own viewport wins over its Agent's default (pure)."""
    own: payloads.Viewport | None = getattr(payload, "viewport", None)
    return own or agent


def ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


async def upload(agent: AgentClient, evidence: Evidence) -> list[Artifact]:
    return [await agent.upload_artifact(n, c, t) for n, c, t in evidence.files]


def inline(data: dict[str, Any], evidence: Evidence) -> dict[str, Any]:
    """The data itself if small; else its summary, the whole of it in result.json."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    if len(raw) <= INLINE_LIMIT:
        return data
    evidence.add("result.json", raw, "application/json")
    return {"truncated": True, "artifact": "result.json", "bytes": len(raw),
            "keys": sorted(data)[:50]}  # fmt: skip


class LogTail(logging.Handler):
    """The attempt's own log lines, the last LOG_TAIL_BYTES of them, kept to upload as the
    attempt's `agent.log` artifact: the pod's logs go with the pod, this stays."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self.lines: collections.deque[str] = collections.deque()
        self.size = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)[: self.limit] + "\n"
        self.lines.append(line)
        self.size += len(line)
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft())

    def text(self) -> bytes:
        return "".join(self.lines).encode()


async def report(agent: AgentClient, a: Attempt, outcome: Outcome | BaseException) -> None:
    if a.log is not None:
        log.info("final: %s", type(outcome).__name__ if not isinstance(outcome, Outcome)
                 else ("passed" if outcome.failure is None else f"failed: {outcome.failure}"))  # fmt: skip
        a.evidence.add(ATTEMPT_LOG, a.log.text(), "text/plain; charset=utf-8")
    extra = {"blocked": a.guard.summary() + a.denied[:50]} if (a.guard.blocked or a.denied) else {}
    data: dict[str, Any] | None = extra or None
    if isinstance(outcome, Outcome):
        data = inline({**outcome.data, **extra}, a.evidence)
    t = time.monotonic()
    artifacts = await upload(agent, a.evidence)
    a.timings["uploadMs"] = ms(t)
    metrics = {**(outcome.metrics if isinstance(outcome, Outcome) else {}), **a.timings}
    t = time.monotonic()
    try:
        await send_final(agent, outcome, data, artifacts, metrics)
    finally:
        a.timings["callbackMs"] = ms(t)
        # One line of where the attempt's time went (the callback's own time included).
        log.info(json.dumps({"timings": a.timings}))


async def send_final(
    agent: AgentClient,
    outcome: Outcome | BaseException,
    data: dict[str, Any] | None,
    artifacts: list[Artifact],
    metrics: dict[str, float],
) -> None:
    if isinstance(outcome, Outcome) and outcome.failure is None:
        await agent.succeed(data, artifacts=artifacts, metrics=metrics)
    elif isinstance(outcome, Outcome):
        # The page was reached and checked, and said no: retrying cannot change that.
        await agent.fail("AssertionFailed", outcome.failure or "", retryable=False,
                         data=data, artifacts=artifacts, metrics=metrics)  # fmt: skip
    elif isinstance(outcome, TaskError):
        await agent.fail(outcome.code, outcome.message, retryable=outcome.retryable,
                         data=data, artifacts=artifacts, metrics=metrics)  # fmt: skip
    else:
        stack = "".join(traceback.format_exception(outcome))
        await agent.fail("AgentError", f"{type(outcome).__name__}: {outcome}", retryable=True,
                         stack=stack, data=data, artifacts=artifacts, metrics=metrics)  # fmt: skip


def process_age_ms() -> float:
    """How long ago this process started (interpreter start and imports included)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round((uptime - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


async def main() -> int:
    s = RunnerSettings()
    async with AgentClient.from_env() as agent:
        try:
            # Secrets by reference: their values came through the pod spec; folded in
            # here, and redacted from everything the client sends back.
            values = task_secrets.from_env()
            agent.redactor = task_secrets.Redactor(values.values())
            raw = task_secrets.resolve(json.loads(s.payload), values.__getitem__)
            payload = payloads.parse(s.task_type, raw)
        except KeyError as e:
            return await final(
                agent.fail("UserError", f"no value for the secret {e}", retryable=False)
            )
        except (payloads.PayloadError, ValueError) as e:
            return await final(agent.fail("UserError", f"bad payload: {e}", retryable=False))
        stop = asyncio.Event()
        tail = LogTail()
        logging.getLogger().addHandler(tail)
        a = Attempt(s, agent=agent, stop=stop, log=tail)
        log.info("attempt of a %s task in %s", s.task_type, s.browser)
        a.timings["startupMs"] = process_age_ms()
        # When the process started, by the node's clock (pod-start benchmarks line it up
        # with the Job's creation).
        a.timings["processStartedAt"] = round(time.time() - a.timings["startupMs"] / 1000, 3)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        work = asyncio.create_task(a.run(payload))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {work, stopper},
            timeout=max(1.0, s.timeout_seconds - STOP_MARGIN_SECONDS),
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopper.cancel()
        if work.done():
            result: Outcome | BaseException = (
                work.exception() or work.result()
                if not work.cancelled()
                else TaskError("Cancelled", "stopped", False)
            )
        else:
            elapsed = time.time() - s.started
            timed_out = not stop.is_set() or elapsed >= s.timeout_seconds - STOP_MARGIN_SECONDS
            work.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(work, EVIDENCE_SECONDS)
            result = (
                TaskError("Timeout", f"the attempt's {s.timeout_seconds:.0f} s ran out", True)
                if timed_out
                else TaskError("Cancelled", "stopped: the task was cancelled", False)
            )
        return await final(report(agent, a, result))


async def final(send: Any) -> int:
    """Exit status: 0 once the final callback is acknowledged (or no longer wanted)."""
    try:
        await send
    except CallbackRejected as e:
        # 409/410: the attempt is stale or the task finished (cancelled); nothing to tell.
        log.warning("final callback refused: %s", e)
        return 0 if getattr(e, "status", 0) in (409, 410) else 1
    return 0


def entrypoint() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if sys.argv[1:] == ["--self-test"]:
        from .selftest import main as selftest

        sys.exit(asyncio.run(selftest()))
    sys.exit(asyncio.run(main()))
