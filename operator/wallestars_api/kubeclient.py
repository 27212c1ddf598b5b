"""A small Kubernetes REST client on aiohttp, for the hot paths of our components.

The operator and the webhook service make a handful of kinds of call (get and patch of
AgentTask status, Jobs, Secrets, reviews); on a 2-core machine the general-purpose
clients cost more CPU per call than the API server does (measured in bench/RESULTS.md),
so these calls go through aiohttp directly. Configuration is read the standard way:
in-cluster service account (token re-read as the kubelet rotates it) or a kubeconfig,
parsed by lightkube.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from wallestars_api.retry import retry_after_seconds

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
TOKEN_REREAD_SECONDS = 60.0


def in_cluster_server() -> str | None:
    """The API server as a pod reaches it, the way client-go's in-cluster config finds it
    (the KUBERNETES_SERVICE_HOST/PORT variables every container gets), or None outside a
    pod. Not the name kubernetes.default.svc: that needs cluster DNS and port 443."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host or not (SA_DIR / "token").exists():
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class Limiter(Protocol):
    async def take(self) -> None: ...


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(
        self, code: int, reason: str, message: str, retry_after: float | None = None,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # seconds the server asked for (429, 503)
        self.causes = causes or []  # the Status's details.causes: {field, reason, message}


def api_error(status: int, raw: bytes, retry_after: str | None) -> ApiError:
    """The API server's error answer, read from its Status body where it sent one."""
    # What the server asked for goes to the caller, whose write waits it out (client-go's
    # reading: that request, not every request, is held).
    asked = retry_after_seconds(status, retry_after)
    try:
        st = json.loads(raw)
        details = st.get("details") or {}
        return ApiError(status, str(st.get("reason", "")), str(st.get("message", "")), asked,
                        list(details.get("causes") or []))  # fmt: skip
    except (ValueError, AttributeError):
        return ApiError(status, "", raw[:500].decode("utf-8", "replace"), asked)


class KubeClient:
    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | bool,
        token: str | None = None,
        token_file: Path | None = None,
        timeout: float = 10.0,
        connections: int = 64,
        limiter: Limiter | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._token = token
        self._token_file = token_file
        self._token_read = 0.0
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._limiter = limiter
        self.calls = 0  # requests sent, for metrics and benchmarks

    @classmethod
    def from_env(cls, kubeconfig: Path | None = None, **kw: Any) -> KubeClient:
        """In-cluster config when running in a pod (and no kubeconfig is named), else a kubeconfig."""
        server = in_cluster_server() if kubeconfig is None else None
        if server is not None:
            ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
            return cls(server, ctx, token_file=SA_DIR / "token", **kw)
        from lightkube.config.client_adapter import verify_cluster
        from lightkube.config.kubeconfig import KubeConfig

        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        single = config.get()
        assert single is not None

        def abs_file(p: str | os.PathLike[str]) -> str:
            path = Path(p)
            return str(
                path if path.is_absolute() or single.fname is None else single.fname.parent / path
            )

        user = single.user
        verify = verify_cluster(single.cluster, user, abs_file)  # type: ignore[arg-type]
        token = user.token if user else None
        token_file = Path(abs_file(user.token_file)) if user and user.token_file else None
        return cls(single.cluster.server, verify, token=token, token_file=token_file, **kw)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _auth(self) -> dict[str, str]:
        if (
            self._token_file is not None
            and time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS
        ):
            self._token = self._token_file.read_text().strip()
            self._token_read = time.monotonic()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        accept: str = "application/json",
        token: str | None = None,
    ) -> dict[str, Any]:
        """One request, as this client's identity, or with ``token`` as the person whose
        token it is (the console acts for its user, never with its own rights)."""
        if self._limiter is not None:
            await self._limiter.take()
        self.calls += 1
        auth = {"Authorization": f"Bearer {token}"} if token is not None else self._auth()
        headers = {"Accept": accept, **auth}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"))
            headers["Content-Type"] = content_type
        async with self.session.request(
            method, self.server + path, data=data, headers=headers, params=params
        ) as r:
            raw = await r.read()
            if r.status >= 400:
                raise api_error(r.status, raw, r.headers.get("Retry-After"))
            result: dict[str, Any] = json.loads(raw) if raw else {}
            return result

    async def watch(
        self, path: str, params: Mapping[str, str] | None = None, token: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a watch: one decoded event per line, until the server ends it; as this
        client's identity, or with ``token`` as the person whose token it is."""
        q = {"watch": "1", **(params or {})}
        auth = {"Authorization": f"Bearer {token}"} if token is not None else self._auth()
        headers = {"Accept": "application/json", **auth}
        # No end to reading a watch; but a connection (from the pool, then TCP and TLS)
        # within the client's usual time.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, connect=self._timeout.total)
        async with self.session.get(
            self.server + path, params=q, headers=headers, timeout=timeout
        ) as r:
            if r.status >= 400:
                raise api_error(r.status, await r.read(), r.headers.get("Retry-After"))
            async for line in r.content:
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
