"""Browser Agents' health probes: the image's own ``--self-test``, run as a Job.

A probe runs when a browser Agent is created, when its spec changes, and then every
``spec.browser.healthProbe.intervalSeconds`` (default 600, 0: no periodic probe). Until a
probe of the Agent's current browser configuration has passed, the Agent is not Ready,
so an engine its image lacks (WebKit outside Playwright's image) is reported before any
task is sent. The verdict lives in ``status.probe``; a restart picks it up from there.

Everything here is pure: what to do next (``decide``), the Job, and the verdict read
from the finished Job and its pod's termination message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wallestars_api.lifecycle import parse_ts, ts
from wallestars_api.resources import API_VERSION, GROUP

from wallestars_operator.manifests import AttemptConfig, agent_pod, label_value

PROBE_LABEL = f"{GROUP}/probe"  # the Agent's name, on a probe's Job and pod
DEFAULT_INTERVAL_SECONDS = 600
DEFAULT_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Settings:
    enabled: bool
    interval: int  # seconds; 0: only on creation and spec changes
    timeout: int


def settings(browser: Mapping[str, Any]) -> Settings:
    """An Agent with its own command runs its own program: probed only if it says so."""
    hp = browser.get("healthProbe") or {}
    return Settings(
        enabled=bool(hp.get("enabled", "command" not in browser)),
        interval=int(hp.get("intervalSeconds", DEFAULT_INTERVAL_SECONDS)),
        timeout=int(hp.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
    )


def fingerprint(browser: Mapping[str, Any]) -> str:
    """What a verdict holds for: the browser configuration (image, engine, command...)."""
    raw = json.dumps(dict(browser), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def probe_name(agent: str, uid: str, n: int) -> str:
    """Deterministic per (Agent, probe number): a second create is refused, not doubled."""
    digest = hashlib.sha256(f"{uid}/probe/{n}".encode()).hexdigest()[:8]
    return f"{agent[:40].replace('.', '-').rstrip('-')}-probe-{digest}-{n}"


def probe_job(agent: Mapping[str, Any], n: int, cfg: AttemptConfig) -> dict[str, Any]:
    """The Job of probe ``n``: the Agent's image, engine and limits, with no callback key
    and no network beyond what its browser pods get (the same NetworkPolicy selects it)."""
    meta = agent["metadata"]
    browser = (agent.get("spec") or {}).get("browser") or {}
    s = settings(browser)
    name = probe_name(meta["name"], meta.get("uid", ""), n)
    lbl = {
        PROBE_LABEL: label_value(meta["name"]),
        "app.kubernetes.io/managed-by": "wallestars-operator",
        "app.kubernetes.io/component": "browser-agent",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": lbl,
            "annotations": {
                f"{GROUP}/probe-fingerprint": fingerprint(browser),
                f"{GROUP}/probe-number": str(n),
                f"{GROUP}/probe-generation": str(meta.get("generation", 0)),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Agent",
                    "name": meta["name"],
                    "uid": meta.get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": s.timeout,
            "ttlSecondsAfterFinished": cfg.job_ttl_seconds,
            "template": agent_pod(browser, cfg, [], lbl, args=["--self-test"]),
        },
    }


@dataclass(frozen=True)
class Start:
    n: int


@dataclass(frozen=True)
class Record:
    job: Mapping[str, Any]


def job_finished(job: Mapping[str, Any]) -> bool:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return True
    return False


def decide(
    agent: Mapping[str, Any], jobs: Iterable[Mapping[str, Any]], now: datetime
) -> Start | Record | None:
    """The next step of an Agent's probing: record a finished probe, start one, or wait."""
    spec, status = agent.get("spec") or {}, agent.get("status") or {}
    if spec.get("type") != "browser":
        return None
    browser = spec.get("browser") or {}
    s = settings(browser)
    if not s.enabled:
        return None
    uid = agent["metadata"].get("uid")
    mine = [
        j for j in jobs if uid in {o.get("uid") for o in j["metadata"].get("ownerReferences") or []}
    ]
    if any(not job_finished(j) for j in mine):
        return None  # one probe at a time
    last = status.get("probe") or {}
    unrecorded = [j for j in mine if number(j) > int(last.get("number") or 0)]
    if unrecorded:
        return Record(max(unrecorded, key=number))
    completed = parse_ts(last.get("completionTime"))
    due = (
        last.get("fingerprint") != fingerprint(browser)
        or last.get("generation") != (agent["metadata"].get("generation") or 0)
        or completed is None
        or (s.interval > 0 and (now - completed).total_seconds() >= s.interval)
    )
    return Start(int(last.get("number") or 0) + 1) if due else None


def number(job: Mapping[str, Any]) -> int:
    return int(((job["metadata"].get("annotations") or {}).get(f"{GROUP}/probe-number")) or 0)


def verdict(job: Mapping[str, Any], pod: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """status.probe from a finished probe Job and its pod: the self-test's own JSON
    verdict when it wrote one, else why the Job failed."""
    ann = job["metadata"].get("annotations") or {}
    out: dict[str, Any] = {
        "job": job["metadata"]["name"],
        "number": number(job),
        "fingerprint": ann.get(f"{GROUP}/probe-fingerprint", ""),
        "generation": int(ann.get(f"{GROUP}/probe-generation") or 0),
        "completionTime": ts(now),
    }
    said = _termination_message(pod)
    try:
        v = json.loads(said) if said.startswith("{") else None
    except ValueError:
        v = None
    if isinstance(v, dict) and "healthy" in v:
        healthy = bool(v["healthy"])
        return out | {"healthy": healthy, "reason": "Healthy" if healthy else
                      str(v.get("reason") or "SelfTestFailed"),
                      "message": str(v.get("message") or "")[:1000]}  # fmt: skip
    succeeded = any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
    if succeeded:
        return out | {"healthy": True, "reason": "Healthy", "message": "self-test passed"}
    why = [
        c.get("message") or c.get("reason") or ""
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("type") == "Failed" and c.get("status") == "True"
    ]
    tail = said.strip().splitlines()[-1][:300] if said.strip() else ""
    message = "the health probe failed: " + "; ".join(x for x in [*why, tail] if x)
    return out | {"healthy": False, "reason": "ProbeFailed", "message": message[:1000]}


def _termination_message(pod: Mapping[str, Any] | None) -> str:
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if term.get("message"):
            return str(term["message"]).strip()
    return ""


def sickness(agent: Mapping[str, Any], probe: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Why a browser Agent is not Ready on its probes' account, or None (pure)."""
    spec = agent.get("spec") or {}
    browser = spec.get("browser") or {}
    if spec.get("type") != "browser" or not settings(browser).enabled:
        return None
    if not probe or probe.get("fingerprint") != fingerprint(browser):
        return ("Probing", "waiting for the health probe of this browser configuration")
    if not probe.get("healthy"):
        return (str(probe.get("reason") or "ProbeFailed"), str(probe.get("message") or ""))
    return None
