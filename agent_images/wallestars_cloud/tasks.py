"""Built-in task types for any cloud agent: `api-test` and `echo`."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wallestars_cloud.handler import Failed, Invocation, task


@task("echo")
async def echo(payload: dict[str, Any], inv: Invocation) -> dict[str, Any]:
    """Smoke test: the payload back, and which attempt ran it."""
    return {"echo": payload, "attempt": inv.attempt, "idempotencyKey": inv.idempotencyKey}


class Assertion(BaseModel):
    """One check of a response: status, a header, a JSON path, or the latency."""

    model_config = ConfigDict(extra="forbid")

    status: int | None = None
    header: str | None = None
    jsonPath: str | None = None
    latencyMs: float | None = Field(None, gt=0)  # the response must come within this
    equals: Any = None
    contains: str | None = None
    exists: bool | None = None

    def label(self) -> str:
        for k in ("status", "header", "jsonPath", "latencyMs"):
            if getattr(self, k) is not None:
                return f"{k} {getattr(self, k)}"
        return "?"


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    password: str = ""  # passwordFrom (a Secret) is folded in before this is read


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    method: str = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    basicAuth: BasicAuth | None = None
    expectStatus: int | None = None
    assertions: list[Assertion] = []
    timeoutMs: float = Field(30_000, gt=0, le=600_000)


class ApiTest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    requests: list[Request] = []


def json_path(doc: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at a path like ``$.items[0].id`` or ``items[0].id`` (pure)."""
    cur = doc
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path.removeprefix("$").lstrip(".")):
        if index:
            if not isinstance(cur, list) or int(index) >= len(cur):
                return False, None
            cur = cur[int(index)]
        else:
            if not isinstance(cur, dict) or name not in cur:
                return False, None
            cur = cur[name]
    return True, cur


def check(
    a: Assertion, status: int, headers: dict[str, str], body: Any, latency_ms: float
) -> dict[str, Any]:
    """One assertion's verdict with what was seen (pure)."""
    found = True
    actual: Any = None
    if a.status is not None:
        actual = status
        ok = status == a.status
    elif a.latencyMs is not None:
        actual = round(latency_ms, 1)
        ok = latency_ms <= a.latencyMs
    else:
        if a.header is not None:
            actual = headers.get(a.header.lower())
            found = actual is not None
        else:
            found, actual = json_path(body, a.jsonPath or "")
        ok = found if a.exists is not False else not found
        if found and a.equals is not None:
            # equals is text in the CRD: 1, true, first all match their JSON values
            ok = ok and str(a.equals) in (str(actual), json.dumps(actual))
        if found and a.contains is not None:
            ok = ok and a.contains in (actual if isinstance(actual, str) else json.dumps(actual))
    return {"assertion": a.label(), "passed": bool(ok), "actual": actual}


def requests_of(payload: dict[str, Any]) -> list[Request]:
    try:
        if payload.get("requests"):
            return ApiTest.model_validate(payload).requests
        one = {k: v for k, v in payload.items() if k in Request.model_fields}
        return [Request.model_validate(one)]
    except ValidationError as e:
        raise Failed("UserError", f"bad api-test payload: {e}") from None


@task("api-test")
async def api_test(payload: dict[str, Any], inv: Invocation) -> dict[str, Any]:
    """HTTP requests with assertions; every assertion's verdict is in the result."""
    results: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s:
        for req in requests_of(payload):
            asserts = list(req.assertions)
            if req.expectStatus is not None:
                asserts.insert(0, Assertion(status=req.expectStatus))
            t0 = time.perf_counter()
            auth = (aiohttp.BasicAuth(req.basicAuth.username, req.basicAuth.password)
                    if req.basicAuth else None)  # fmt: skip
            async with s.request(req.method, req.url, headers=req.headers, data=req.body, auth=auth,
                                 timeout=aiohttp.ClientTimeout(total=req.timeoutMs / 1000)) as r:  # fmt: skip
                raw = await r.read()
                latency = (time.perf_counter() - t0) * 1000
                headers = {k.lower(): v for k, v in r.headers.items()}
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw[:1000].decode(errors="replace")
                verdicts = [check(a, r.status, headers, body, latency) for a in asserts]
            results.append({"url": req.url, "method": req.method, "status": r.status,
                            "latencyMs": round(latency, 1), "assertions": verdicts})  # fmt: skip
    failed = [f"{x['url']}: {v['assertion']} (got {v['actual']!r})"
              for x in results for v in x["assertions"] if not v["passed"]]  # fmt: skip
    data = {"requests": results, "passed": not failed,
            "assertions": sum(len(x["assertions"]) for x in results)}  # fmt: skip
    if failed:
        raise Failed("AssertionFailed", "; ".join(failed)[:2000], data)
    return data
