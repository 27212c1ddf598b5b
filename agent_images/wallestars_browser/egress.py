"""The browser's only way out: smokescreen, an egress proxy, run beside Chromium.

A route filter in the page cannot see redirects, DNS answers or what a socket finally
connects to; a proxy in the path of every connection can. Chromium is told to resolve
no names itself and to send everything (loopback included) through smokescreen, which
resolves each host once, refuses loopback, link-local (cloud metadata), private, CGNAT
and IPv4-embedding IPv6 addresses, and then connects to the address it checked, so a
DNS answer that changes between check and connect (rebinding) cannot slip through.
Per-Agent exceptions come from the Agent's `spec.browser.network`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Cloud metadata and host-agent addresses, denied whatever an Agent allows. smokescreen
# lets an allow range win over a deny range, so an Agent's allowances that reach into
# these are dropped before smokescreen sees them (``never_denied``). Link-local holds AWS, GCP and Azure's
# instance metadata (169.254.169.254) and ECS's task metadata (169.254.170.2); Azure's
# WireServer is a public address reachable from every Azure VM, a known SSRF target;
# AWS serves instance metadata over IPv6 too.
ALWAYS_DENIED = (
    "169.254.0.0/16",
    "fe80::/10",
    "168.63.129.16/32",
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "fd00:ec2::23/128",  # EKS Pod Identity agent over IPv6
    "fd20:ce::254/128",  # GCE metadata over IPv6
)
# IPv4-mapped IPv6 (::ffff:a.b.c.d): smokescreen unmaps these, so allowing any of them
# allows the IPv4 addresses they stand for; no Agent needs them.
MAPPED = "::ffff:0:0/96"


class NetworkPolicy(BaseModel):
    """`spec.browser.network` of the Agent (WALLESTARS_NETWORK)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    allowed_hosts: list[str] = Field(default_factory=list)  # empty: any public host
    allow_private_cidrs: list[str] = Field(default_factory=list, alias="allowPrivateCIDRs")
    allow_private_addresses: list[str] = Field(default_factory=list)  # IP or IP:port
    deny_cidrs: list[str] = Field(default_factory=list, alias="denyCIDRs")  # the cluster's


def never_denied(entries: Sequence[str]) -> list[str]:
    """The CIDRs or IP[:port] allowances that do not reach an ALWAYS_DENIED address (pure)."""
    import ipaddress

    denied = [ipaddress.ip_network(c) for c in (*ALWAYS_DENIED, MAPPED)]
    kept = []
    for e in entries:
        host = e.rsplit(":", 1)[0].strip("[]") if e.count(":") == 1 or e.startswith("[") else e
        try:
            net = ipaddress.ip_network(host, strict=False)
        except ValueError:
            continue  # not an address: smokescreen would refuse to start on it
        if not any(net.version == d.version and net.overlaps(d) for d in denied):
            kept.append(e)
    return kept


def smokescreen_args(
    policy: NetworkPolicy,
    port: int,
    acl_file: Path | None,
    extra_deny: Sequence[str] = (),
    resolvers: Sequence[str] = (),
) -> list[str]:
    """smokescreen's command line for this policy (pure)."""
    args = ["--listen-ip", "127.0.0.1", "--listen-port", str(port)]
    for r in resolvers:  # DNS servers (IP:port); the system's when none
        args += ["--resolver-address", r]
    for cidr in never_denied(policy.allow_private_cidrs):
        args += ["--allow-range", cidr]
    for addr in never_denied(policy.allow_private_addresses):
        args += ["--allow-address", addr]
    for cidr in [*ALWAYS_DENIED, *policy.deny_cidrs, *extra_deny]:
        args += ["--deny-range", cidr]
    if acl_file is not None:
        # Agents have no client certificates (smokescreen's roles): the ACL's default
        # policy applies to every request, which needs allow_missing_role (config only).
        args += ["--config-file", str(acl_file.with_name("smokescreen.yaml"))]
        args += ["--egress-acl-file", str(acl_file)]
    return args


def acl_yaml(policy: NetworkPolicy) -> str | None:
    """An egress ACL allowing only the Agent's hosts, or None when any public host is fine.

    Written as JSON, which is YAML, so no YAML library is needed in the image.
    """
    if not policy.allowed_hosts:
        return None
    acl = {
        "version": "v1",
        "services": [],
        "default": {
            "project": "wallestars",
            "action": "enforce",
            "allowed_domains": policy.allowed_hosts,
        },
    }
    return json.dumps(acl)


@dataclass(frozen=True)
class Denial:
    host: str
    reason: str


def denials(log_lines: Sequence[str]) -> list[Denial]:
    """What smokescreen refused, from its JSON log (one decision per proxied connection)."""
    out: list[Denial] = []
    for line in log_lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("allow") is False:
            out.append(
                Denial(str(rec.get("requested_host", "?")), str(rec.get("decision_reason", "")))
            )
    return out


def find_smokescreen() -> str:
    path = os.environ.get("WALLESTARS_SMOKESCREEN") or shutil.which("smokescreen")
    if not path:
        raise FileNotFoundError(
            "smokescreen (the egress proxy) not found: set WALLESTARS_SMOKESCREEN or put it on PATH"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EgressProxy:
    """smokescreen as a child process for the lifetime of one attempt (or of the
    operator's notifier)."""

    policy: NetworkPolicy
    workdir: Path
    extra_deny: Sequence[str] = ()
    resolvers: Sequence[str] = ()
    port: int = 0
    # A long-lived proxy (the operator's, for notifications) keeps only its last lines.
    log_limit: int | None = None
    proc: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> EgressProxy:
        acl_text = acl_yaml(self.policy)
        acl = None
        if acl_text is not None:
            acl = self.workdir / "egress-acl.yaml"
            acl.write_text(acl_text)
            acl.with_name("smokescreen.yaml").write_text('{"allow_missing_role": true}')
        self.port = free_port()
        self.proc = await asyncio.create_subprocess_exec(
            find_smokescreen(),
            *smokescreen_args(self.policy, self.port, acl, self.extra_deny, self.resolvers),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def ready(self) -> None:
        """Wait until the proxy listens (Chromium may start meanwhile: it connects to the
        proxy only with its first request)."""
        await self._wait_listening()

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.log.append(line.decode(errors="replace").rstrip())
            if self.log_limit is not None and len(self.log) > 2 * self.log_limit:
                del self.log[: -self.log_limit]

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError("smokescreen exited: " + "\n".join(self.log[-20:]))
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("smokescreen did not start listening within 10 s")

    def denials(self) -> list[Denial]:
        return denials(self.log)

    async def __aexit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
