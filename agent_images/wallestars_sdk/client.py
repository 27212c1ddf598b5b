"""The agent side of the callback protocol: what every agent image and users' own agents use.

    from wallestars_sdk import AgentClient

    async with AgentClient.from_env() as agent:
        await agent.progress(20)
        art = await agent.upload_artifact("page.png", png_bytes, "image/png")
        await agent.succeed({"title": "Example"}, artifacts=[art])

Configured from the environment the operator gives each attempt (``WALLESTARS_*``,
see docs/callbacks.md). Each callback is signed with the attempt's own key and sent
with bounded retries; a retry keeps its ``webhook-id`` (so the service applies it once)
and is signed afresh (so its timestamp is current).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import ssl
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic_settings import BaseSettings, SettingsConfigDict

from wallestars_sdk.keys import decode_key
from wallestars_sdk.protocol import (
    LOG_TAIL_LIMIT,
    Artifact,
    CallbackBody,
    CallbackErrorInfo,
    CallbackResponse,
    CallbackStatus,
    NextAction,
    Results,
    TaskRef,
)
from wallestars_sdk.secrets import Redactor
from wallestars_sdk.signing import read_content, sign_headers, sign_seed

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class AgentConfig(BaseSettings):
    """What the operator tells an attempt, from WALLESTARS_* variables."""

    model_config = SettingsConfigDict(env_prefix="WALLESTARS_", extra="ignore")

    callback_url: str  # .../api/agent-callback?task=<uid>&attempt=<n>
    task_uid: str
    task_namespace: str
    task_name: str
    attempt: int
    agent_id: str = "agent"
    key_file: Path = Path("/var/run/wallestars/key/key")
    send_attempts: int = 6  # progress callbacks; a final result is retried to the deadline
    request_timeout_seconds: float = 30.0
    timeout_seconds: float = 300.0  # the attempt's deadline, from when this client started
    # The webhook service's CA (PEM) when it is not a public one: the chart's own CA or
    # cert-manager's; empty: the system's trust store. An https callback URL is always
    # verified.
    callback_ca: str = ""
    # Mutual TLS: the attempt's own client certificate and key, as PEM files (a browser
    # Job's mounted Secret) or PEM text (a cloud invocation's).
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    client_cert_pem: str = ""
    client_key_pem: str = ""


def ssl_context(config: AgentConfig) -> ssl.SSLContext | None:
    """How callbacks are secured: None for a plain http:// URL (development only)."""
    if urlsplit(config.callback_url).scheme != "https":
        return None
    ctx = ssl.create_default_context(cadata=config.callback_ca or None)
    if config.client_cert_file is not None:
        ctx.load_cert_chain(config.client_cert_file, config.client_key_file)
    elif config.client_cert_pem:
        # ssl loads a certificate chain from files only: a private directory, gone after.
        with tempfile.TemporaryDirectory() as d:
            cert, key = Path(d, "tls.crt"), Path(d, "tls.key")
            cert.write_text(config.client_cert_pem)
            key.touch(0o600)
            key.write_text(config.client_key_pem)
            ctx.load_cert_chain(cert, key)
    return ctx


class CallbackRejected(Exception):
    """The service refused a callback for good (4xx other than 408/429)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"callback refused with HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class AgentClient:
    def __init__(
        self, config: AgentConfig, key: bytes, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.key = key
        self._session = session
        self._own_session = session is None
        self.started = time.monotonic()
        self.cancelled = False  # set once the service answers nextAction=cancel
        # The task's secret values (wallestars_sdk.secrets): redacted from every callback
        # and text artifact this client sends, whatever code produced them.
        self.redactor = Redactor()

    @classmethod
    def from_env(cls) -> AgentClient:
        config = AgentConfig()  # required fields come from the environment
        return cls(config, decode_key(config.key_file.read_text()))

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_seconds),
                connector=aiohttp.TCPConnector(ssl=ssl_context(self.config) or True),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    # --- callbacks ------------------------------------------------------------------

    def body(self, status: CallbackStatus, **fields: Any) -> CallbackBody:
        return CallbackBody(
            taskId=self.config.task_uid,
            agentId=self.config.agent_id,
            task=TaskRef(namespace=self.config.task_namespace, name=self.config.task_name),
            attempt=self.config.attempt,
            status=status,
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            duration=round(time.monotonic() - self.started, 3),
            **fields,
        )

    async def progress(self, percent: int) -> CallbackResponse:
        return await self.send(
            self.body(CallbackStatus.RUNNING, progress=max(0, min(100, percent)))
        )

    async def succeed(
        self,
        data: dict[str, Any] | None = None,
        artifacts: list[Artifact] | None = None,
        logs: str | None = None,
        metrics: dict[str, float] | None = None,
        partial: bool = False,
    ) -> CallbackResponse:
        results = _results(data, artifacts, logs, metrics)
        status = CallbackStatus.PARTIAL if partial else CallbackStatus.SUCCESS
        return await self.send(
            self.body(status, progress=100 if not partial else None, results=results)
        )

    async def fail(
        self,
        code: str,
        message: str,
        retryable: bool = True,
        stack: str | None = None,
        logs: str | None = None,
        data: dict[str, Any] | None = None,
        artifacts: list[Artifact] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> CallbackResponse:
        """The attempt failed; what it found on the way (data, evidence) still travels."""
        err = CallbackErrorInfo(
            code=code,
            message=message[:4096],
            retryable=retryable,
            stack=stack[-65536:] if stack else None,
        )
        results = None
        if logs or data is not None or artifacts or metrics:
            results = _results(data, artifacts, logs, metrics)
        return await self.send(self.body(CallbackStatus.FAILURE, error=err, results=results))

    def deadline(self) -> float:
        """When the attempt's time is up (monotonic), a second early."""
        return self.started + self.config.timeout_seconds - 1.0

    async def send(self, body: CallbackBody, webhook_id: str | None = None) -> CallbackResponse:
        """POST one callback: signed, retried with backoff, acknowledged or raised. A final
        result is retried until the attempt's deadline (an overloaded service answers 503
        with Retry-After); a progress report only ``send_attempts`` times."""
        raw = self.redactor.raw(body.model_dump_json(exclude_none=True).encode())
        webhook_id = webhook_id or "msg_" + secrets.token_hex(16)
        final = body.status != CallbackStatus.RUNNING
        _, text = await self._deliver(
            "POST", self.config.callback_url, raw, webhook_id, {"Content-Type": "application/json"},
            until=self.deadline() if final else None,
        )  # fmt: skip
        resp = CallbackResponse.model_validate_json(text)
        if resp.nextAction == NextAction.CANCEL:
            self.cancelled = True
        return resp

    async def _deliver(
        self, method: str, url: str, raw: bytes, webhook_id: str, headers: dict[str, str],
        until: float | None = None,
    ) -> tuple[int, str]:  # fmt: skip
        """Send until acknowledged: ``send_attempts`` tries, or with ``until`` (monotonic)
        as many as fit before it. Backoff doubles from 0.5 s to 10 s, jittered to
        50-100%, and never shorter than the service's Retry-After."""
        delay = 0.5
        last: Exception | None = None
        n = 0
        while True:
            n += 1
            asked = 0.0  # the service's Retry-After
            signed = {**headers, **sign_headers([self.key], webhook_id, int(time.time()), raw)}
            try:
                async with self.session.request(method, url, data=raw, headers=signed) as r:
                    text = await r.text()
                    if r.status < 300:
                        return r.status, text
                    if r.status not in RETRYABLE_STATUS:
                        raise CallbackRejected(r.status, text)
                    last = CallbackRejected(r.status, text)
                    retry_after = r.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        asked = float(retry_after)
            except (aiohttp.ClientError, TimeoutError) as e:
                last = e
            jitter = random.random()  # noqa: S311 (jitter, not secrecy)
            # Never sooner than asked; many agents told the same spread over half of it.
            wait = max(delay * (0.5 + jitter / 2), asked * (1 + jitter / 2))
            more = (
                time.monotonic() + wait < until if until is not None
                else n < self.config.send_attempts
            )  # fmt: skip
            if not more:
                assert last is not None
                raise last
            await asyncio.sleep(wait)
            delay = min(delay * 2, 10.0)

    # --- artifacts ------------------------------------------------------------------

    def artifact_url(self, name: str) -> str:
        u = urlsplit(self.config.callback_url)
        c = self.config
        return f"{u.scheme}://{u.netloc}/api/artifacts/{c.task_namespace}/{c.task_name}/{c.task_uid}/{c.attempt}/{name}"

    async def upload_artifact(
        self, name: str, content: bytes | Path, content_type: str = "application/octet-stream"
    ) -> Artifact:
        """Store a file with the service; returns the reference to put in a result."""
        raw = content.read_bytes() if isinstance(content, Path) else content
        raw = self.redactor.artifact(raw, content_type)
        _, text = await self._deliver(
            "PUT",
            self.artifact_url(name),
            raw,
            "art_" + secrets.token_hex(16),
            {"Content-Type": content_type},
            until=self.deadline(),  # part of the result: as persistent as the result
        )
        ref = Artifact.model_validate(json.loads(text))
        if ref.sha256 != hashlib.sha256(raw).hexdigest():
            raise CallbackRejected(502, "the service stored different bytes than were sent")
        return ref

    def baseline_url(self) -> str:
        u = urlsplit(self.config.callback_url)
        c = self.config
        return f"{u.scheme}://{u.netloc}/api/baseline/{c.task_namespace}/{c.task_name}/{c.task_uid}/{c.attempt}"

    async def read_baseline(self, limit: int) -> bytes:
        """The image this task's payload names as its baseline (``baseline.artifact``: an
        artifact of another task), served to this attempt only on its signature. Retried
        like a progress report; a refusal (404: no such task or artifact) is raised."""
        url = self.baseline_url()
        content = read_content(urlsplit(url).path)
        last: Exception | None = None
        for n in range(self.config.send_attempts):
            if n:
                await asyncio.sleep(min(0.5 * 2**n, 10.0) * (0.5 + random.random() / 2))  # noqa: S311
            signed = sign_headers(
                [self.key], "get_" + secrets.token_hex(16), int(time.time()), content
            )
            try:
                async with self.session.get(url, headers=signed) as r:
                    if r.status == 200:
                        body = bytearray()
                        async for chunk in r.content.iter_chunked(64 * 1024):
                            body += chunk
                            if len(body) > limit:
                                raise CallbackRejected(413, f"the baseline is over {limit} bytes")
                        return bytes(body)
                    last = CallbackRejected(r.status, await r.text())
                    if r.status not in RETRYABLE_STATUS:
                        raise last
            except (aiohttp.ClientError, TimeoutError) as e:
                last = e
        assert last is not None
        raise last


def _results(
    data: dict[str, Any] | None,
    artifacts: list[Artifact] | None,
    logs: str | None,
    metrics: dict[str, float] | None,
) -> Results:
    """A callback's results, the log cut to its tail."""
    return Results(
        data=data,
        artifacts=artifacts or [],
        logs=(logs or "")[-LOG_TAIL_LIMIT:] or None,
        metrics=metrics or {},
    )


def sign_seed_headers(
    key: bytes, agent_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of the seed's scheme, for agents written against it."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "x-agent-id": agent_id,
        "x-agent-timestamp": str(ts),
        "x-agent-signature": sign_seed(key, ts, body),
    }
