"""The callback protocol's messages (DESIGN.md §4), shared by the SDK and the service.

The body is the seed's ``{taskId, agentId, status, timestamp, duration, progress,
results{data, artifacts, logs, metrics}, error{code, message, stack}}`` plus
``task{namespace, name}`` and ``attempt``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

INLINE_RESULT_LIMIT = 32 * 1024  # bytes of results.data + metrics as JSON (DESIGN.md §5)
LOG_TAIL_LIMIT = 16 * 1024  # characters of results.logs kept in status
MAX_JSON_DEPTH = 32

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
ArtifactName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class CallbackStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"


class NextAction(StrEnum):
    NONE = "none"
    RETRY = "retry"
    ESCALATE = "escalate"
    CANCEL = "cancel"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskRef(Strict):
    namespace: Name
    name: Name


class Artifact(Strict):
    name: ArtifactName
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    size: Annotated[int, Field(ge=0)] | None = None
    contentType: Annotated[str, StringConstraints(max_length=255)] | None = None


class Results(Strict):
    data: dict[str, Any] | None = None
    artifacts: Annotated[list[Artifact], Field(max_length=100)] = []
    logs: Annotated[str, StringConstraints(max_length=1024 * 1024)] | None = None
    metrics: Annotated[
        dict[Annotated[str, StringConstraints(max_length=128)], float], Field(max_length=64)
    ] = {}


class CallbackErrorInfo(Strict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    stack: Annotated[str, StringConstraints(max_length=65536)] | None = None
    # false: retrying cannot help (bad input, a page that says no); the task fails now.
    retryable: bool = True


class CallbackBody(Strict):
    taskId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    agentId: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    task: TaskRef
    attempt: Annotated[int, Field(ge=1, le=1000)]
    status: CallbackStatus
    timestamp: Annotated[str, StringConstraints(max_length=64)] | None = None
    duration: Annotated[float, Field(ge=0, le=10**7)] | None = None
    progress: Annotated[int, Field(ge=0, le=100)] | None = None
    results: Results | None = None
    error: CallbackErrorInfo | None = None

    def inline_size(self) -> int:
        """Bytes the inline part of the result takes in status (data and metrics)."""
        if self.results is None:
            return 0
        return len(
            json.dumps(
                {"data": self.results.data, "metrics": self.results.metrics}, separators=(",", ":")
            )
        )


class CallbackResponse(BaseModel):
    acknowledged: bool
    nextAction: NextAction = NextAction.NONE
    metadata: dict[str, Any] = {}


class BodyError(ValueError):
    """The body is not a well-formed callback; the message says what and where."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise BodyError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise BodyError(f"{name} is not JSON")


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            raise BodyError(f"nested deeper than {limit} levels")
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)


def loads_strict(raw: bytes) -> Any:
    """JSON that refuses duplicate keys, NaN/Infinity, bad UTF-8 and deep nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError("the body is not UTF-8") from e
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError as e:
        raise BodyError(f"nested deeper than {MAX_JSON_DEPTH} levels") from e
    except json.JSONDecodeError as e:
        raise BodyError(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    _depth(value, MAX_JSON_DEPTH)
    return value


def _finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise BodyError(f"{path}: number out of range")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")


@dataclass(frozen=True)
class PlanContext:
    """What a callback in the integration plan's format leaves out, from its URL."""

    attempt: int
    namespace: str | None = None
    name: str | None = None


def from_plan(value: Any, ctx: PlanContext) -> Any:
    """A callback written to the integration plan's format, as ours (pure). Only for
    callbacks signed with the plan's x-agent-* scheme, whose agents are JavaScript:
    ``duration`` in milliseconds, ``timestamp`` as milliseconds since the epoch,
    ``results.logs`` as an array of lines, no ``task`` or ``attempt`` (the URL has them).
    Anything else is left for validation to judge."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if "task" not in out and ctx.namespace and ctx.name:
        out["task"] = {"namespace": ctx.namespace, "name": ctx.name}
    out.setdefault("attempt", ctx.attempt)
    ts = out.get("timestamp")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < 10**15:
        out["timestamp"] = datetime.fromtimestamp(ts / 1000, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")  # fmt: skip
    d = out.get("duration")
    if isinstance(d, int | float) and not isinstance(d, bool):
        out["duration"] = d / 1000
    results = out.get("results")
    if isinstance(results, dict) and isinstance(results.get("logs"), list):
        lines = results["logs"]
        if all(isinstance(x, str) for x in lines):
            out["results"] = {**results, "logs": "\n".join(lines)}
    return out


def parse_callback(raw: bytes, plan: PlanContext | None = None) -> CallbackBody:
    """The callback in ``raw``, or BodyError naming the field that is wrong. With
    ``plan``, a body in the integration plan's format is read as ours (from_plan)."""
    from pydantic import ValidationError

    value = loads_strict(raw)
    _finite(value, "body")  # 1e999 parses as inf without passing parse_constant
    if plan is not None:
        value = from_plan(value, plan)
        raw = json.dumps(value, separators=(",", ":")).encode()
    try:
        # Validated from the raw JSON (strict JSON mode: no "1" for 1, enums by value);
        # loads_strict above has already refused duplicate keys, NaN and deep nesting.
        body = CallbackBody.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BodyError(f"{where}: {first['msg']}") from e
    if body.inline_size() > INLINE_RESULT_LIMIT:
        raise BodyError(
            f"results.data and results.metrics take {body.inline_size()} bytes, over the "
            f"{INLINE_RESULT_LIMIT}-byte inline limit: upload large results as artifacts"
        )
    if body.status in (CallbackStatus.FAILURE,) and body.error is None:
        raise BodyError("error: required when status is failure")
    return body


def dumps(body: CallbackBody) -> bytes:
    return body.model_dump_json(exclude_none=True).encode()
