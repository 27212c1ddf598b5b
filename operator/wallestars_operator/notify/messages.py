"""What a notification says and how it is signed (pure).

`standard`: a Standard Webhooks message, `{type, timestamp, data}` with `webhook-id`,
`webhook-timestamp` and `webhook-signature`. `plan`: the integration plan's callback
body `{taskId, agentId, status, timestamp, duration, results, error}`, signed both ways
(its `x-agent-*` headers too), so an application written to the plan gets what it
expects. The webhook-id is a function of (object UID, receiver, transition): the same
transition always carries the same id, so a receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from wallestars_sdk.signing import sign_headers, sign_seed

from wallestars_operator.notify.transitions import Transition

PLAN_STATUS = {"Running": "running", "Succeeded": "success", "PartiallySucceeded": "partial",
               "Failed": "failure", "TimedOut": "failure", "Cancelled": "failure"}  # fmt: skip


def webhook_id(uid: str, receiver: int, transition: str) -> str:
    digest = hashlib.sha256(f"{uid}/{receiver}/{transition}".encode()).hexdigest()[:32]
    return "ntf_" + digest


def event_type(kind: str, phase: str) -> str:
    return f"{kind.lower()}.{phase[0].lower()}{phase[1:]}"


def standard_body(kind: str, obj: Mapping[str, Any], tr: Transition) -> dict[str, Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    data: dict[str, Any] = {"kind": kind, "namespace": meta["namespace"], "name": meta["name"],
                            "uid": meta["uid"], "phase": tr.phase}  # fmt: skip
    if kind == "AgentTask":
        spec = obj.get("spec") or {}
        data |= {"type": spec.get("type", ""), "attempt": tr.attempt}
        recs: list[dict[str, Any]] = status.get("attempts") or []
        rec = next((r for r in recs if r.get("attempt") == tr.attempt), {})
        if rec.get("agent") or status.get("agent"):
            data["agent"] = rec.get("agent") or status.get("agent")
        if tr.phase == "Retrying":
            data |= {"reason": rec.get("reason", ""), "message": rec.get("message", "")}
        elif tr.phase in PLAN_STATUS and tr.phase != "Running":
            data |= {k: status[k] for k in ("reason", "message", "result", "error",
                                            "durationSeconds") if k in status}  # fmt: skip
    else:
        if tr.phase in ("Succeeded", "Failed", "Cancelled"):
            data |= {
                k: status[k] for k in ("reason", "message", "progress", "outputs") if k in status
            }
    return {"type": event_type(kind, tr.phase), "timestamp": tr.time or status.get("completionTime", ""),
            "data": data}  # fmt: skip


def plan_body(obj: Mapping[str, Any], tr: Transition) -> dict[str, Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    body: dict[str, Any] = {"taskId": meta["uid"], "agentId": status.get("agent", ""),
                            "status": PLAN_STATUS[tr.phase], "timestamp": tr.time,
                            "task": {"namespace": meta["namespace"], "name": meta["name"]},
                            "attempt": tr.attempt}  # fmt: skip
    if tr.phase != "Running":
        body["duration"] = status.get("durationSeconds", 0)
        result = status.get("result") or {}
        body["results"] = {
            k: result[k] for k in ("data", "artifacts", "logs", "metrics") if k in result
        }
        if status.get("error"):
            body["error"] = {
                k: v for k, v in status["error"].items() if k in ("code", "message", "stack")
            }
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def headers(fmt: str, key: bytes, wid: str, now: int, raw: bytes, agent_id: str) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": "wallestars-notifications/1",
           **sign_headers([key], wid, now, raw)}  # fmt: skip
    if fmt == "plan":
        out |= {"x-agent-id": agent_id or "wallestars", "x-agent-timestamp": str(now),
                "x-agent-signature": sign_seed(key, now, raw)}  # fmt: skip
    return out
