"""The application API's requests and answers, as pure functions.

A request in the integration plan's shape (``{type, payload, priority, agentType}``)
becomes an AgentTask; an AgentTask becomes the plan's task object. The API server's
own refusals come back field by field in the request's terms (``payload.url``, not
``spec.payload.url``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from wallestars_api.resources import API_VERSION

BROWSER_TYPES = frozenset({"screenshot", "scrape", "e2e-test", "performance", "accessibility"})
CLOUD_TYPES = frozenset({"api-test", "echo"})
PRIORITY_WORDS = {"low": 2, "normal": 5, "high": 8, "critical": 10}
# What a request may carry: the plan's fields and the AgentTask's own.
FIELDS = frozenset({"name", "type", "payload", "priority", "agentType", "agentRef",
                    "capabilities", "timeoutSeconds", "deadlineSeconds", "retries", "labels",
                    "notify", "ttlSecondsAfterFinished"})  # fmt: skip
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PHASES = ("Queued", "Dispatched", "Running", "Retrying", "Succeeded", "PartiallySucceeded",
          "Failed", "TimedOut", "Cancelled")  # fmt: skip


class BadRequest(ValueError):
    """A request that cannot become an AgentTask: what is wrong, and where."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def to_task(body: Any) -> dict[str, Any]:
    """The AgentTask a request asks for. The API server checks the rest (the payload
    against the task type, ranges, CEL rules) and its refusal is passed on."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r} (known: {', '.join(sorted(FIELDS))})", unknown[0]
        )
    type_ = body.get("type")
    if not isinstance(type_, str) or not type_:
        raise BadRequest("type is required (screenshot, scrape, e2e-test, ...)", "type")
    spec: dict[str, Any] = {"type": type_, "payload": body.get("payload", {})}
    if not isinstance(spec["payload"], Mapping):
        raise BadRequest("payload must be an object", "payload")
    priority = body.get("priority")
    if isinstance(priority, str):
        if priority not in PRIORITY_WORDS:
            raise BadRequest(
                f"priority must be 0-10 or one of {', '.join(PRIORITY_WORDS)}", "priority"
            )
        priority = PRIORITY_WORDS[priority]
    if priority is not None:
        spec["priority"] = priority
    ref, kind = body.get("agentRef"), body.get("agentType")
    if ref is not None and kind is not None:
        raise BadRequest(
            "give agentRef (one Agent) or agentType (any Ready one), not both", "agentRef"
        )
    if ref is not None:
        spec["agentRef"] = ref
    else:
        if kind is None:
            kind = (
                "browser" if type_ in BROWSER_TYPES else "cloud" if type_ in CLOUD_TYPES else None
            )
        if kind is None:
            raise BadRequest(
                f"agentType (browser or cloud) or agentRef is required for type {type_!r}",
                "agentType",
            )
        caps = body.get("capabilities", [type_])
        spec["agentSelector"] = {"type": kind, "capabilities": caps}
    for k in ("timeoutSeconds", "deadlineSeconds", "retries", "notify", "ttlSecondsAfterFinished"):
        if k in body:
            spec[k] = body[k]
    meta: dict[str, Any] = {}
    name = body.get("name")
    if name is None:
        meta["generateName"] = f"{type_[:40] if NAME.fullmatch(type_[:40]) else 'task'}-"
    elif isinstance(name, str) and NAME.fullmatch(name):
        meta["name"] = name
    else:
        raise BadRequest(
            "name must be a DNS label: lower-case letters, digits and '-', at most 63", "name"
        )
    if "labels" in body:
        if not isinstance(body["labels"], Mapping):
            raise BadRequest("labels must be an object of strings", "labels")
        meta["labels"] = dict(body["labels"])
    return {"apiVersion": API_VERSION, "kind": "AgentTask", "metadata": meta, "spec": spec}


def field_of(k8s_field: str) -> str:
    """``spec.payload.url`` -> ``payload.url``; ``metadata.name`` -> ``name``."""
    for prefix in ("spec.agentSelector.", "spec.", "metadata."):
        if k8s_field.startswith(prefix):
            rest = k8s_field.removeprefix(prefix)
            return (
                f"capabilities{rest.removeprefix('capabilities')}"
                if prefix == "spec.agentSelector."
                else rest
            )
    return k8s_field


def refusal(
    code: int, reason: str, message: str, causes: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The API server's refusal in the request's terms."""
    fields = [{"field": field_of(str(c.get("field", ""))), "reason": str(c.get("reason", "")),
               "message": str(c.get("message", ""))} for c in causes]  # fmt: skip
    return {
        "error": {"code": code, "reason": reason or "Invalid", "message": message, "fields": fields}
    }


def view(task: Mapping[str, Any]) -> dict[str, Any]:
    """An AgentTask as the plan's task object."""
    meta, spec, st = task["metadata"], task.get("spec") or {}, task.get("status") or {}
    out: dict[str, Any] = {
        "id": meta.get("uid", ""), "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
        "type": spec.get("type", ""), "priority": spec.get("priority", 5),
        "status": st.get("phase", "Queued"), "progress": st.get("progress", 0),
        "agent": st.get("agent") or spec.get("agentRef") or "", "attempt": st.get("attempt", 0),
        "createdAt": meta.get("creationTimestamp", ""), "labels": meta.get("labels") or {},
        "cancelRequested": bool(spec.get("cancel")), "reason": st.get("reason", ""),
        "message": st.get("message", ""),
    }  # fmt: skip
    for k, out_k in (("startTime", "startedAt"), ("completionTime", "completedAt")):
        if st.get(k):
            out[out_k] = st[k]
    if st.get("result"):
        out["results"] = st["result"]
    if st.get("error"):
        out["error"] = st["error"]
    return out


def agent_view(agent: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, st = agent["metadata"], agent.get("spec") or {}, agent.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    cloud = spec.get("cloud") or {}
    return {
        "name": meta.get("name", ""), "namespace": meta.get("namespace", ""), "type": spec.get("type", ""),
        "provider": cloud.get("provider", "") if spec.get("type") == "cloud" else (spec.get("browser") or {}).get("browser", "chromium"),
        "capabilities": spec.get("capabilities") or [], "slots": spec.get("concurrency", 1),
        "activeTasks": st.get("activeTasks", 0), "queuedTasks": st.get("queuedTasks", 0),
        "successRate": st.get("successRate"),
        "ready": {"status": (conds.get("Ready") or {}).get("status", "Unknown"),
                  "reason": (conds.get("Ready") or {}).get("reason", ""),
                  "message": (conds.get("Ready") or {}).get("message", "")},
        "healthy": {"status": (conds.get("Healthy") or {}).get("status", "Unknown"),
                    "reason": (conds.get("Healthy") or {}).get("reason", "")},
    }  # fmt: skip


def selectors(query: Mapping[str, str]) -> dict[str, str]:
    """List filters as the API server's selectors (server-side, so paging holds)."""
    fields = []
    for q, path in (("phase", "status.phase"), ("agent", "status.agent"), ("type", "spec.type")):
        v = query.get(q)
        if v:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,253}", v):
                raise BadRequest(f"{q} must be a plain value", q)
            fields.append(f"{path}={v}")
    out: dict[str, str] = {}
    if fields:
        out["fieldSelector"] = ",".join(fields)
    if query.get("labelSelector"):
        out["labelSelector"] = query["labelSelector"]
    limit = query.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 500:
        raise BadRequest("limit must be 1-500", "limit")
    out["limit"] = limit
    if query.get("continue"):
        out["continue"] = query["continue"]
    return out


def tasks_path(ns: str, name: str = "") -> str:
    return f"/apis/{API_VERSION}/namespaces/{ns}/agenttasks" + (f"/{name}" if name else "")


def agents_path(ns: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{ns}/agents"
