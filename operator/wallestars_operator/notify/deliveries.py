"""Who is told of which transition, and how each delivery goes (pure).

A receiver is an entry of the object's `spec.notify`, or the installation's default
sink for its namespace. A delivery is (receiver, transition); its record in
`status.notifications` (attempts, last status, delivered or given-up time, next
attempt) is what a restarted operator resumes from. At least once: a delivery whose
record was not written before a crash is sent again with the same webhook-id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wallestars_api.lifecycle import parse_ts, ts

from wallestars_operator.notify.transitions import TASK_TERMINAL, Transition, transitions

SINK = -1  # the receiver index of the installation's default sink
DEFAULT_ON = ("Succeeded", "PartiallySucceeded", "Failed", "TimedOut", "Cancelled")
RECORD_LIMIT = 64  # the CRD's maxItems; the oldest finished records go first
BACKOFF_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class Receiver:
    index: int  # into spec.notify, or SINK
    url: str
    secret_namespace: str
    secret_name: str
    secret_key: str
    phases: frozenset[str]
    format: str = "standard"


@dataclass(frozen=True)
class Sink:
    """The installation's default sink: every object of the listed namespaces."""

    url: str
    secret_namespace: str
    secret_name: str
    secret_key: str
    namespaces: frozenset[str]  # empty: every namespace
    phases: frozenset[str] = frozenset(DEFAULT_ON)
    format: str = "standard"


def receivers(obj: Mapping[str, Any], sink: Sink | None) -> list[Receiver]:
    meta = obj["metadata"]
    out = []
    for i, n in enumerate((obj.get("spec") or {}).get("notify") or []):
        ref = n.get("secretRef") or {}
        out.append(Receiver(i, str(n["url"]), meta["namespace"], str(ref.get("name", "")),
                            str(ref.get("key", "secret")), frozenset(n.get("phases") or DEFAULT_ON),
                            str(n.get("format", "standard"))))  # fmt: skip
    if sink is not None and (not sink.namespaces or meta["namespace"] in sink.namespaces):
        out.append(Receiver(SINK, sink.url, sink.secret_namespace, sink.secret_name,
                            sink.secret_key, sink.phases, sink.format))  # fmt: skip
    return out


Key = tuple[int, str]  # (receiver, transition id)


def records(obj: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for r in (obj.get("status") or {}).get("notifications") or []:
        if isinstance(r, Mapping) and "receiver" in r and "transition" in r:
            out[(int(r["receiver"]), str(r["transition"]))] = dict(r)
    return out


def finished(record: Mapping[str, Any] | None) -> bool:
    return record is not None and bool(record.get("deliveredTime") or record.get("gaveUpTime"))


@dataclass(frozen=True)
class Due:
    receiver: Receiver
    transition: Transition
    record: dict[str, Any] | None


def due(kind: str, obj: Mapping[str, Any], sink: Sink | None, recs: Mapping[Key, Mapping[str, Any]],
        now: datetime, max_age: float) -> tuple[list[Due], datetime | None]:  # fmt: skip
    """The deliveries to attempt now, and when the next one that waits falls due. A
    transition older than ``max_age`` that was never attempted is not started (a sink
    turned on does not replay history beyond it)."""
    out: list[Due] = []
    nxt: datetime | None = None
    trs = transitions(kind, obj)
    for rc in receivers(obj, sink):
        for tr in trs:
            if tr.phase not in rc.phases:
                continue
            rec = recs.get((rc.index, tr.id))
            if finished(rec):
                continue
            if rec is None:
                when = parse_ts(tr.time)
                if when is not None and (now - when).total_seconds() > max_age:
                    continue
                out.append(Due(rc, tr, None))
                continue
            at = parse_ts(rec.get("nextAttemptTime")) or now
            if at <= now:
                out.append(Due(rc, tr, dict(rec)))
            else:
                nxt = at if nxt is None else min(nxt, at)
    return out, nxt


def settled(kind: str, obj: Mapping[str, Any], sink: Sink | None,
            recs: Mapping[Key, Mapping[str, Any]]) -> bool:  # fmt: skip
    """Whether nothing more can be due: the object has finished and every listed
    transition is delivered or given up (the notifier may forget it)."""
    phase = (obj.get("status") or {}).get("phase", "")
    done = (
        phase in TASK_TERMINAL
        if kind == "AgentTask"
        else phase in ("Succeeded", "Failed", "Cancelled")
    )
    if not done:
        return False
    return all(finished(recs.get((rc.index, tr.id)))
               for rc in receivers(obj, sink) for tr in transitions(kind, obj) if tr.phase in rc.phases)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """One POST's end: the receiver's HTTP status, or why there was none."""

    status: int | None
    error: str = ""
    refused: bool = False  # by the egress policy, or plain http: never sent, never retried


def backoff(attempts: int, rand: float) -> float:
    """1 s doubling per attempt up to an hour, jittered to 50-100%."""
    return min(BACKOFF_CAP_SECONDS, math.pow(2, max(attempts - 1, 0))) * (0.5 + rand / 2)


def after(record: Mapping[str, Any] | None, receiver: Receiver, tr: Transition,
          webhook_id: str, out: Outcome, now: datetime, rand: float, max_age: float) -> dict[str, Any]:  # fmt: skip
    """The delivery's record after one attempt: delivered on a 2xx; given up when
    refused, when the receiver answers 410 Gone, or past ``max_age`` since the first
    attempt; otherwise the next attempt's time."""
    rec = dict(record or {})
    rec.update(receiver=receiver.index, transition=tr.id, webhookId=webhook_id,
               attempts=int(rec.get("attempts", 0)) + 1, lastAttemptTime=ts(now))  # fmt: skip
    rec.setdefault("firstAttemptTime", ts(now))
    rec["lastStatus"] = (
        str(out.status) if out.status is not None else ("refused" if out.refused else "error")
    )
    rec.pop("nextAttemptTime", None)
    if out.error:
        rec["lastError"] = out.error[:512]
    else:
        rec.pop("lastError", None)
    if out.status is not None and 200 <= out.status < 300:
        rec["deliveredTime"] = ts(now)
        return rec
    first = parse_ts(rec["firstAttemptTime"]) or now
    wait = backoff(rec["attempts"], rand)
    if (
        out.refused
        or out.status == 410
        or (now + timedelta(seconds=wait) - first).total_seconds() > max_age
    ):
        rec["gaveUpTime"] = ts(now)
        return rec
    rec["nextAttemptTime"] = ts(now + timedelta(seconds=wait))
    return rec


def as_status(recs: Mapping[Key, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """status.notifications: in (receiver, first attempt) order, at most RECORD_LIMIT,
    dropping the oldest finished ones first."""
    items = sorted(
        recs.values(),
        key=lambda r: (str(r.get("firstAttemptTime", "")), r["receiver"], r["transition"]),
    )
    while len(items) > RECORD_LIMIT:
        old = next((r for r in items if finished(r)), items[0])
        items.remove(old)
    return [dict(r) for r in items]


def plain_http_refused(receivers_: Sequence[Receiver], allow_plain_http: bool) -> set[int]:
    return (
        set() if allow_plain_http else {r.index for r in receivers_ if r.url.startswith("http://")}
    )
