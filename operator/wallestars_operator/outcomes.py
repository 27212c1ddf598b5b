"""How an attempt's Job ended, read from the Job and its pod: pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wallestars_api.lifecycle import parse_ts


@dataclass(frozen=True)
class JobEnd:
    finished: datetime
    code: str  # CallbackMissing, Timeout, OOMKilled, Evicted
    message: str
    exit_code: int | None


def job_end(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> JobEnd | None:
    """None while the Job runs; else why it ended, as a failure of the attempt.

    Called only when the task is still live, i.e. no final callback arrived: so even a
    Job that completed (exit 0) is a failed attempt, CallbackMissing.
    """
    conds = (job.get("status") or {}).get("conditions") or []
    end = next(
        (c for c in conds if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"),
        None,
    )
    if end is None:
        return None
    finished = parse_ts(end.get("lastTransitionTime")) or parse_ts(
        (job.get("status") or {}).get("completionTime")
    )
    assert finished is not None
    exit_code, term_reason = None, None
    pod_status = (pod or {}).get("status") or {}
    for cs in pod_status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if term:
            exit_code, term_reason = term.get("exitCode"), term.get("reason")
    if end["type"] == "Failed" and end.get("reason") == "DeadlineExceeded":
        return JobEnd(
            finished, "Timeout", "the attempt's Job passed its activeDeadlineSeconds", exit_code
        )
    if term_reason == "OOMKilled":
        return JobEnd(
            finished,
            "OOMKilled",
            "the agent was killed for using more memory than its limit",
            exit_code,
        )
    disrupted = any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in pod_status.get("conditions") or []
    )
    if disrupted or pod_status.get("reason") == "Evicted":
        return JobEnd(finished, "Evicted", "the agent's pod was evicted", exit_code)
    how = f"exited with code {exit_code}" if exit_code is not None else f"ended ({end['type']})"
    return JobEnd(
        finished, "CallbackMissing", f"the agent {how} without sending a result", exit_code
    )
