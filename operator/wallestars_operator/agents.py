"""Agents: why one cannot take tasks, and its status (conditions, load, statistics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wallestars_api.conditions import set_condition
from wallestars_api.lifecycle import SUCCESS_PHASES, parse_ts, ts

from wallestars_operator.executors import plain_http_refused

Problem = tuple[str, str]  # (reason, message) of Ready=False


def agent_problem(agent: Mapping[str, Any], allow_plain_http: bool = False) -> str | None:
    """Why an Agent's spec cannot take tasks, or None (pure). The CRD refuses most of
    this already; what depends on the installation (plain http) is decided here."""
    spec = agent.get("spec") or {}
    if spec.get("type") == "browser" and "browser" not in spec:
        return "spec.browser is not set"
    if spec.get("type") != "cloud":
        return None
    cloud = spec.get("cloud") or {}
    provider = cloud.get("provider")
    if provider == "aws-lambda":
        aws = cloud.get("aws") or {}
        if not aws.get("functionName"):
            return "spec.cloud.aws.functionName is not set"
        endpoint = aws.get("endpointURL")
        if endpoint and not allow_plain_http:
            return plain_http_refused(endpoint, "spec.cloud.aws.endpointURL")
        return None
    urls = {
        "http": ("http", ("url", "healthURL")),
        "azure-functions": ("azure", ("functionURL", "healthURL")),
    }
    if provider not in urls:
        return None
    section, fields = urls[provider]
    conf = cloud.get(section) or {}
    if not conf.get(fields[0]):
        return f"spec.cloud.{section}.{fields[0]} is not set"
    if not allow_plain_http:
        for f in fields:
            if conf.get(f) and (why := plain_http_refused(conf[f], f"spec.cloud.{section}.{f}")):
                return why
    return None


def agent_conditions(
    conditions: Sequence[Mapping[str, Any]],
    problem: str | None,
    paused: bool,
    sick: Problem | None,
    now: str,
) -> tuple[list[dict[str, Any]], bool]:
    """Ready and Healthy from the spec's problem, spec.paused and the last probe (pure).
    Returns the conditions and whether the Agent takes tasks."""
    if problem is not None:
        ready, reason, msg = False, "InvalidConfiguration", problem
    elif sick is not None:
        ready, (reason, msg) = False, sick
    else:
        ready, reason, msg = True, "Ready", "the agent takes tasks"
    conds: list[dict[str, Any]] = [dict(c) for c in conditions]
    if ready and paused:
        conds = set_condition(conds, "Ready", False, "Paused",
                              "spec.paused is true: no new task is dispatched", now)  # fmt: skip
    else:
        conds = set_condition(conds, "Ready", ready, reason, msg, now)
    conds = set_condition(conds, "Healthy", ready, "Healthy" if ready else reason, msg, now)
    return conds, ready and not paused


def statistics(finished: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """successRate and meanDurationSeconds over the newest 100 finished tasks' statuses (pure).
    PartiallySucceeded counts as a success, as on the dashboards."""
    recent = sorted(finished, key=lambda s: s.get("completionTime", ""))[-100:]
    out: dict[str, float] = {}
    if recent:
        ok = sum(1 for s in recent if s.get("phase") in SUCCESS_PHASES)
        out["successRate"] = round(ok / len(recent), 3)
    durations = [float(s["durationSeconds"]) for s in recent if "durationSeconds" in s]
    if durations:
        out["meanDurationSeconds"] = round(sum(durations) / len(durations), 3)
    return out


def heartbeat(
    finished: Sequence[Mapping[str, Any]],
    running: Sequence[Mapping[str, Any]],
    probe: Mapping[str, Any] | None,
) -> str | None:
    """status.lastHeartbeatTime: when the Agent last really did something (pure): a task
    of it ended, one reported running, or a health probe of it finished. None if never."""
    times = [s.get("completionTime") for s in finished]
    for s in running:
        times.append(s.get("startTime"))
        times += [c.get("time") for c in (s.get("callbacks") or [])[-1:]]
    times.append((probe or {}).get("completionTime"))
    parsed = [p for t in times if t and (p := parse_ts(t)) is not None]
    return ts(max(parsed)) if parsed else None
