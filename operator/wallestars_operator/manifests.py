"""What the operator creates for an attempt, built by pure functions.

Names are deterministic per (task, attempt), so a handler that runs twice (a crash, a
duplicate event) finds the object it already made instead of making a second one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import ts
from wallestars_api.resources import API_VERSION, GROUP
from wallestars_sdk import secrets as task_secrets

DEFAULT_COMMAND = ["python", "-m", "wallestars_browser"]
KEY_DIR = "/var/run/wallestars/key"
AGENT_UID = 10001  # the browser image's non-root user
STOP_GRACE_SECONDS = 30
# Built from agent_images/Dockerfile.browser; the tag follows the project's version.
DEFAULT_BROWSER_IMAGE = "ghcr.io/wallestars/browser-agent:0.1.0"


@dataclass(frozen=True)
class AttemptConfig:
    """What every attempt needs to know of the installation."""

    callback_base: str  # e.g. http://wallestars-webhooks.wallestars-system:8080
    job_ttl_seconds: int = 600
    dshm_limit: str = "1Gi"
    browser_image: str = DEFAULT_BROWSER_IMAGE  # for Agents that name none
    deny_cidrs: tuple[str, ...] = ()  # the cluster's ranges, refused to every browser
    # Development only (WALLESTARS_INSECURE_DEVELOPMENT_ALLOW_PLAIN_HTTP): cloud functions
    # at plain http:// URLs. Off in the chart; the tests and the demo turn it on.
    allow_plain_http: bool = False
    secret_cache_seconds: float = 30.0  # how long a Secret an Agent names is cached
    health_probe_seconds: float = 30.0  # how often each cloud Agent is probed
    # Where cloud agents call back when they are outside the cluster (the chart's
    # Ingress or HTTPRoute host); empty: callback_base, as browser agents.
    cloud_callback_base: str = ""
    # The webhook service's CA (PEM) for agents to verify it by; empty: a public CA.
    callback_ca: str = ""
    # Mutual TLS: the client CA (certificate, key PEM) that signs each browser attempt's
    # client certificate; None: off.
    client_ca: tuple[bytes, bytes] | None = None


def label_value(text: str) -> str:
    """``text`` cut to a valid label value: at most 63 characters, ending alphanumeric
    (a task's name may be 253 long, and a cut can end on '-' or '.', which the API
    server refuses). Names start alphanumeric already."""
    return text[:63].rstrip("-_.")


def attempt_name(task_name: str, uid: str, attempt: int) -> str:
    """A DNS-1123 label unique to (task, attempt), at most 63 characters: the Job's and
    key Secret's name, also a label value (job-name) and the start of its pod's hostname,
    so no dots."""
    digest = hashlib.sha256(f"{uid}/{attempt}".encode()).hexdigest()[:8]
    stem = task_name[:45].replace(".", "-").rstrip("-")
    return f"{stem}-{digest}-a{attempt}"


def callback_url(
    cfg: AttemptConfig, meta: Mapping[str, Any], attempt: int, cloud: bool = False
) -> str:
    """task and attempt name the signing key; namespace and name let an agent written to
    the integration plan, whose body has only taskId, be matched to its AgentTask (the
    service still checks that the task there has that UID)."""
    base = ((cloud and cfg.cloud_callback_base) or cfg.callback_base).rstrip("/")
    return (f"{base}/api/agent-callback?task={meta['uid']}&attempt={attempt}"
            f"&namespace={meta['namespace']}&name={meta['name']}")  # fmt: skip


def owner_reference(task: Mapping[str, Any]) -> dict[str, Any]:
    meta = task["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentTask",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(task: Mapping[str, Any], attempt: int, agent: str) -> dict[str, str]:
    meta = task["metadata"]
    return {
        f"{GROUP}/task": label_value(meta["name"]),
        f"{GROUP}/task-uid": meta["uid"],
        f"{GROUP}/attempt": str(attempt),
        f"{GROUP}/agent": label_value(agent),
        "app.kubernetes.io/managed-by": "wallestars-operator",
        "app.kubernetes.io/component": "browser-agent",
    }


def attempt_env(
    task: Mapping[str, Any], attempt: int, agent: str, cfg: AttemptConfig
) -> dict[str, str]:
    """The WALLESTARS_* environment the SDK reads (docs/callbacks.md)."""
    meta, spec = task["metadata"], task["spec"]
    return {
        "WALLESTARS_CALLBACK_URL": callback_url(cfg, meta, attempt),
        "WALLESTARS_TASK_UID": meta["uid"],
        "WALLESTARS_TASK_NAMESPACE": meta["namespace"],
        "WALLESTARS_TASK_NAME": meta["name"],
        "WALLESTARS_ATTEMPT": str(attempt),
        "WALLESTARS_AGENT_ID": agent,
        "WALLESTARS_TASK_TYPE": spec["type"],
        "WALLESTARS_PAYLOAD": json.dumps(spec.get("payload") or {}, separators=(",", ":")),
        "WALLESTARS_TIMEOUT_SECONDS": str(spec.get("timeoutSeconds", 300)),
        **({"WALLESTARS_CALLBACK_CA": cfg.callback_ca} if cfg.callback_ca else {}),
    }


def key_secret(
    task: Mapping[str, Any],
    attempt: int,
    agent: str,
    key_text: str,
    client_cert: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The attempt's callback key (and under mutual TLS its client certificate and key),
    owned by the task (deleted with it), never changed."""
    meta = task["metadata"]
    data = {"key": key_text}
    if client_cert is not None:
        data |= {"tls.crt": client_cert[0], "tls.key": client_cert[1]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": attempt_name(meta["name"], meta["uid"], attempt),
            "namespace": meta["namespace"],
            "labels": labels(task, attempt, agent),
            "ownerReferences": [owner_reference(task)],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def browser_job(
    task: Mapping[str, Any], agent_obj: Mapping[str, Any], attempt: int, cfg: AttemptConfig
) -> dict[str, Any]:
    """One attempt of a browser task: a Job that runs once, Pod Security `restricted`."""
    meta, spec = task["metadata"], task["spec"]
    agent = agent_obj["metadata"]["name"]
    browser = (agent_obj.get("spec") or {}).get("browser") or {}
    name = attempt_name(meta["name"], meta["uid"], attempt)
    lbl = labels(task, attempt, agent)
    env = [{"name": k, "value": v} for k, v in attempt_env(task, attempt, agent, cfg).items()]
    env.append({"name": "WALLESTARS_KEY_FILE", "value": f"{KEY_DIR}/key"})
    if cfg.client_ca is not None:
        env += [{"name": "WALLESTARS_CLIENT_CERT_FILE", "value": f"{KEY_DIR}/tls.crt"},
                {"name": "WALLESTARS_CLIENT_KEY_FILE", "value": f"{KEY_DIR}/tls.key"}]  # fmt: skip
    env += secret_env(spec.get("payload") or {})
    template = agent_pod(browser, cfg, env, lbl, key_secret=name,
                         key_items=("key", "tls.crt", "tls.key") if cfg.client_ca else ("key",))  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": lbl,
            "ownerReferences": [owner_reference(task)],
        },
        "spec": {
            # Retries belong to the operator, so every attempt is its own visible Job.
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(spec.get("timeoutSeconds", 300)),
            "ttlSecondsAfterFinished": cfg.job_ttl_seconds,
            # A pod lost to a disruption (eviction, node drain) is not the attempt failing.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            "template": template,
        },
    }


def secret_env(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The payload's Secrets by reference, each into the agent's environment straight from
    the Secret (the kubelet reads it; the operator only names it), with their order."""
    refs = task_secrets.references(payload)
    if not refs:
        return []
    return [
        {"name": task_secrets.REFS_ENV, "value": json.dumps(refs, separators=(",", ":"))},
        *({"name": f"{task_secrets.SECRET_ENV}{i}",
           "valueFrom": {"secretKeyRef": {"name": n, "key": k}}} for i, (n, k) in enumerate(refs)),
    ]  # fmt: skip


def agent_pod(
    browser: Mapping[str, Any],
    cfg: AttemptConfig,
    env: list[dict[str, Any]],
    lbl: Mapping[str, str],
    key_secret: str | None = None,
    args: list[str] | None = None,
    key_items: tuple[str, ...] = ("key",),
) -> dict[str, Any]:
    """The pod template of a browser agent's container (an attempt's, or a health probe's
    with no key and `args`): Pod Security `restricted`, a read-only root, /tmp and a
    memory-backed /dev/shm, the Agent's image, command, resources and environment."""
    env = [
        *env,
        {"name": "WALLESTARS_BROWSER", "value": browser.get("browser", "chromium")},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 (the writable emptyDir)
    ]
    if cfg.deny_cidrs:
        env.append({"name": "WALLESTARS_DENY_CIDRS", "value": ",".join(cfg.deny_cidrs)})
    for var, field in (("WALLESTARS_VIEWPORT", "viewport"), ("WALLESTARS_NETWORK", "network")):
        if browser.get(field):
            env.append({"name": var, "value": json.dumps(browser[field], separators=(",", ":"))})
    reserved = {e["name"] for e in env}
    env += [dict(e) for e in browser.get("env") or [] if e["name"] not in reserved]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir: the root is read-only)
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 (Chromium's shared memory)
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cfg.dshm_limit}},
    ]
    if key_secret is not None:
        mounts.insert(0, {"name": "key", "mountPath": KEY_DIR, "readOnly": True})
        volumes.insert(0, {"name": "key", "secret": {
            "secretName": key_secret, "defaultMode": 0o440,
            "items": [{"key": k, "path": k} for k in key_items]}})  # fmt: skip
    container: dict[str, Any] = {
        "name": "agent",
        "image": browser.get("image") or cfg.browser_image,
        "command": list(browser.get("command") or DEFAULT_COMMAND),
        "env": env,
        "resources": dict(browser.get("resources") or {}),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if args:
        container["args"] = list(args)
        # The probe's verdict, as one JSON line, where the operator reads it.
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    if browser.get("imagePullPolicy"):
        container["imagePullPolicy"] = browser["imagePullPolicy"]
    return {
        "metadata": {"labels": dict(lbl)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # Time for a stopped agent to save its screenshot and trace and report.
            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": AGENT_UID,
                "runAsGroup": AGENT_UID,
                "fsGroup": AGENT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }


def invocation(
    task: Mapping[str, Any],
    attempt: int,
    agent: str,
    key_text: str,
    cfg: AttemptConfig,
    now: datetime,
) -> dict[str, Any]:
    """What a cloud agent receives: the task, where to call back, and the attempt's key."""
    meta, spec = task["metadata"], task["spec"]
    timeout = int(spec.get("timeoutSeconds", 300))
    return {
        "task": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
        "type": spec["type"],
        "payload": spec.get("payload") or {},
        "attempt": attempt,
        # Lambda may deliver one event twice: the same key, and the webhook's id dedupe.
        "idempotencyKey": f"{meta['uid']}/{attempt}",
        "agentId": agent,
        "callbackUrl": callback_url(cfg, meta, attempt, cloud=True),
        "key": key_text,
        "timeoutSeconds": timeout,
        "deadline": ts(now + timedelta(seconds=timeout)),
        **({"callbackCA": cfg.callback_ca} if cfg.callback_ca else {}),
    }
