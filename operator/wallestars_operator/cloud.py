"""Cloud attempts: invoking the Agent's function, the Secrets it needs, health probes.

What this process remembers here is only what the API cannot tell it: which attempts
it has invoked (so it never sends one twice) and which were refused (so the failure is
written, and written again, until the cache shows it landed: upkeep.decide).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from wallestars_api.kubeclient import ApiError
from wallestars_api.resources import LABEL_CREDENTIAL
from wallestars_sdk import secrets as task_secrets

from wallestars_operator import metrics
from wallestars_operator.executors import DispatchError, Executors, encode
from wallestars_operator.kube import Kube
from wallestars_operator.manifests import AttemptConfig, invocation
from wallestars_operator.upkeep import Refusal

log = logging.getLogger("wallestars.operator.cloud")


class SecretRefused(DispatchError):
    """A Secret an Agent names cannot be used: missing, forbidden or not opted in."""


class TaskSecretRefused(SecretRefused):
    """A Secret the task's payload names is missing, lacks the key or did not opt in."""


class SecretUnavailable(Exception):
    """The API server could not answer for a Secret now (429, 5xx, no connection): the
    Secret's trouble is not known, so nothing is refused; the read is tried again."""


def secret_refs(agent: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(Secret name, key or None for several keys) of every Secret a cloud Agent names (pure)."""
    cloud = (agent.get("spec") or {}).get("cloud") or {}
    google = ((cloud.get("http") or {}).get("googleIdToken") or {}).get("serviceAccountSecretRef")
    if google:
        google = {"key": "key.json", **google}
    refs = [
        ((cloud.get("http") or {}).get("authHeaderSecretRef"), "key"),
        (google, "key"),
        ((cloud.get("azure") or {}).get("functionKeySecretRef"), "key"),
        ((cloud.get("aws") or {}).get("credentialsSecretRef"), None),
    ]
    return [(r["name"], r.get(k) if k else None) for r, k in refs if r and r.get("name")]


def opted_in(secret: Mapping[str, Any]) -> bool:
    """Whether a Secret opted in to be used by the operator (pure: metadata only)."""
    return ((secret.get("metadata") or {}).get("labels") or {}).get(LABEL_CREDENTIAL) == "true"


def not_opted_in_message(ns: str, name: str) -> str:
    return (
        f'Secret {ns}/{name} does not carry the label {LABEL_CREDENTIAL}: "true"; the operator '
        "uses only Secrets that opt in (docs/operator.md, Secrets)"
    )


class Cloud:
    def __init__(
        self, kube: Kube, masters_key: Any, cfg: AttemptConfig, client_cert: Any = None
    ) -> None:
        # (task, attempt) -> under mutual TLS the attempt's client certificate and key
        self.client_cert = client_cert or (lambda obj, attempt: None)
        self.kube = kube
        self.key_text = masters_key  # (uid, attempt) -> the attempt's key, encoded
        self.cfg = cfg
        self.executors = Executors(allow_plain_http=cfg.allow_plain_http)
        # Attempts this process has invoked. After a crash the set is empty, so an http
        # attempt left Dispatched with no callback is invoked again (at least once).
        self.invoked: set[tuple[str, int]] = set()  # (uid, attempt)
        self.refused: dict[str, Refusal] = {}  # uid -> the refusal of its current attempt
        # (ns, name) -> (the whole Secret or None if it does not exist, when read)
        self.secrets: dict[tuple[str, str], tuple[dict[str, Any] | None, float]] = {}
        self.reading: dict[tuple[str, str], asyncio.Future[dict[str, Any] | None]] = {}
        # Cloud Agents' health: (namespace, name) -> ((reason, message) or None, when probed).
        self.health: dict[tuple[str, str], tuple[tuple[str, str] | None, float]] = {}

    async def close(self) -> None:
        await self.executors.close()

    def forget(self, live: set[tuple[str, int]]) -> None:
        """Keep only what concerns attempts still live (uid, attempt)."""
        self.invoked &= live
        uids = {u for u, _ in live}
        self.refused = {u: r for u, r in self.refused.items() if u in uids}

    # --- Secrets ----------------------------------------------------------------------

    async def secret(self, ns: str, name: str) -> dict[str, Any] | None:
        hit = self.secrets.get((ns, name))
        if hit is not None and time.monotonic() - hit[1] < self.cfg.secret_cache_seconds:
            return hit[0]
        # One read at a time per Secret: the callers that find the cache stale together
        # (a notifier's workers, a burst of invocations) share it.
        reading = self.reading.get((ns, name))
        if reading is None:
            reading = self.reading[(ns, name)] = asyncio.ensure_future(self.read_secret(ns, name))
            reading.add_done_callback(lambda _: self.reading.pop((ns, name), None))
        return await asyncio.shield(reading)

    async def read_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            s = await self.kube.get_secret(ns, name)
        except ApiError as e:
            if e.code in (401, 429) or e.code >= 500:
                raise SecretUnavailable(f"Secret {ns}/{name}: {e}") from e
            raise SecretRefused(f"Secret {ns}/{name} could not be read: {e}") from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise SecretUnavailable(f"Secret {ns}/{name}: {e!r}") from e
        if s is not None and not opted_in(s):
            s = {"metadata": s.get("metadata") or {}}  # its data is never kept, or used
        self.secrets[(ns, name)] = (s, time.monotonic())
        return s

    async def usable_secret(self, ns: str, name: str) -> dict[str, Any]:
        """A Secret that exists and opted in, checked from its metadata (SecretRefused
        otherwise): every use of an Agent's Secret goes through here."""
        s = await self.secret(ns, name)
        if s is None:
            raise SecretRefused(f"Secret {ns}/{name} does not exist")
        if not opted_in(s):
            raise SecretRefused(not_opted_in_message(ns, name))
        return s

    async def secret_value(self, ns: str, name: str, key: str) -> str | None:
        """A key of an opted-in Secret; None if the Secret has no such key."""
        raw = ((await self.usable_secret(ns, name)).get("data") or {}).get(key)
        return base64.b64decode(raw).decode() if raw is not None else None

    # --- invocations ------------------------------------------------------------------

    async def invoke(self, obj: Mapping[str, Any], agent: Mapping[str, Any], now: datetime) -> None:
        """Hand an attempt to a cloud agent. A refusal, whatever its cause (the function,
        a Secret, the network), is recorded for upkeep.decide to fail the attempt with."""
        meta, status = obj["metadata"], obj.get("status") or {}
        attempt = int(status["attempt"])
        cloud = (agent.get("spec") or {}).get("cloud") or {}
        provider = cloud.get("provider")
        self.invoked.add((meta["uid"], attempt))  # before sending: never invoke twice from here
        body = invocation(obj, attempt, agent["metadata"]["name"],
                          self.key_text(meta["uid"], attempt), self.cfg, now)  # fmt: skip
        if cert := self.client_cert(obj, attempt):
            body["clientCertificate"] = {"cert": cert[0], "key": cert[1]}
        ns = meta["namespace"]
        outcome = "error"
        try:
            # Secrets the payload names: read here (opted-in ones only) and carried in the
            # invocation, which goes only to https functions (agents.agent_problem).
            for name, key in task_secrets.references(body["payload"]):
                try:
                    value = await self.secret_value(ns, name, key)
                except SecretRefused as e:
                    raise TaskSecretRefused(f"{e} (named in spec.payload)") from e
                if value is None:
                    raise TaskSecretRefused(f"Secret {ns}/{name} has no key {key}")
                body.setdefault("secrets", {})[f"{name}/{key}"] = value
            await self.executors.of(provider).invoke(
                cloud, encode(body), lambda name, key: self.secret_value(ns, name, key)
            )
            outcome = "ok"
        except SecretUnavailable as e:
            # Nothing was sent: invoked again later (upkeep's Invoke row), not failed.
            self.invoked.discard((meta["uid"], attempt))
            log.warning("invoking %s/%s attempt %d: %s", ns, meta["name"], attempt, e)
        except TaskSecretRefused as e:  # the task's own Secret: fixed by its owner, not a retry
            self.refused[meta["uid"]] = Refusal(attempt, "SecretRefused", str(e), False)
        except (DispatchError, aiohttp.ClientError, TimeoutError) as e:
            self.refused[meta["uid"]] = Refusal(attempt, "DispatchFailed",
                                                str(e) or type(e).__name__, True)  # fmt: skip
        except Exception as e:  # never leave an attempt invoked-but-unknown
            log.exception("invoking %s/%s attempt %d", ns, meta["name"], attempt)
            self.refused[meta["uid"]] = Refusal(attempt, "DispatchFailed",
                                                f"{type(e).__name__}: {e}", True)  # fmt: skip
        finally:
            metrics.CLOUD_INVOCATIONS.labels(provider or "unknown", outcome).inc()

    # --- health -----------------------------------------------------------------------

    def due(self, k: tuple[str, str], mono: float) -> bool:
        last = self.health.get(k)
        if last is not None and mono - last[1] < self.cfg.health_probe_seconds:
            return False
        self.health[k] = (last[0] if last else None, mono)  # no second probe meanwhile
        return True

    async def probe(self, k: tuple[str, str], agent: Mapping[str, Any]) -> None:
        """The Agent's Secrets usable, then its function healthy."""
        cloud = (agent.get("spec") or {}).get("cloud") or {}
        try:
            for name, key in secret_refs(agent):
                s = await self.usable_secret(k[0], name)
                if key is not None and key not in (s.get("data") or {}):
                    raise SecretRefused(f"Secret {k[0]}/{name} has no key {key}")
            try:
                sick = await self.executors.of(cloud.get("provider")).health(
                    cloud, lambda name, key: self.secret_value(k[0], name, key)
                )
            except DispatchError as e:  # the provider's refusal is its health
                sick = str(e)
        except SecretRefused as e:
            problem: tuple[str, str] | None = ("SecretRefused", str(e))
        except SecretUnavailable as e:
            log.warning("probing %s/%s: %s; keeping its last health", *k, e)
            return
        else:
            problem = ("Unhealthy", sick) if sick else None
        self.health[k] = (problem, time.monotonic())
