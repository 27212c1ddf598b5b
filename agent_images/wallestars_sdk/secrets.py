"""Secrets in task payloads, by reference, and keeping their values out of every output.

A payload field that carries a credential may be given as ``<field>From`` holding
``{"secretKeyRef": {"name": ..., "key": ...}}`` (a Secret in the task's namespace):
``valueFrom`` of an e2e ``fill`` step, ``bodyFrom`` and ``headersFrom: {Header: ref}``
of an api-test request, ``passwordFrom`` of ``basicAuth``, ``valueFrom`` of a cookie.
The AgentTask (readable by the aggregated ``view`` role) holds only the reference.

The operator finds the references (``references``) and hands the values to the agent
without writing them anywhere: a browser Job gets each from the Secret through its pod
spec (env ``WALLESTARS_SECRET_<i>``; the operator names the Secret, never reads it), a
cloud invocation carries them in ``secrets`` (https only, and only from Secrets that opt
in). The agent folds them in (``resolve``: ``valueFrom`` becomes ``value``, a map's
entries join the map) before it parses the payload, and redacts every value from what it
sends back (``Redactor``): results, logs, error messages and text artifacts.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

SECRET_ENV = "WALLESTARS_SECRET_"  # noqa: S105 (a name prefix: + index, as in REFS_ENV)
REFS_ENV = "WALLESTARS_SECRET_REFS"  # JSON [[name, key], ...]
REDACTED = "[redacted]"
Ref = tuple[str, str]


def is_ref(v: Any) -> bool:
    r = v.get("secretKeyRef") if isinstance(v, Mapping) else None
    return (
        isinstance(r, Mapping) and isinstance(r.get("name"), str) and isinstance(r.get("key"), str)
    )


def ref_of(v: Mapping[str, Any]) -> Ref:
    r = v["secretKeyRef"]
    return (str(r["name"]), str(r["key"]))


def _walk(v: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(v, Mapping):
        yield v
        for x in v.values():
            yield from _walk(x)
    elif isinstance(v, list):
        for x in v:
            yield from _walk(x)


def references(payload: Any) -> list[Ref]:
    """Every (Secret name, key) the payload refers to, each once, in order (pure)."""
    out: list[Ref] = []
    for obj in _walk(payload):
        for k, v in obj.items():
            if not k.endswith("From"):
                continue
            found = [v] if is_ref(v) else (list(v.values()) if isinstance(v, Mapping) else [])
            for r in found:
                if is_ref(r) and ref_of(r) not in out:
                    out.append(ref_of(r))
    return out


def _refs_only(v: Any) -> bool:
    return is_ref(v) or (isinstance(v, Mapping) and bool(v) and all(is_ref(x) for x in v.values()))


def resolve(payload: Any, value: Callable[[Ref], str]) -> Any:
    """The payload with every ``<field>From`` reference folded into ``<field>`` (pure but
    for ``value``). A map of references joins the map of the same name (headers)."""
    if isinstance(payload, list):
        return [resolve(x, value) for x in payload]
    if not isinstance(payload, Mapping):
        return payload
    out = {k: resolve(v, value) for k, v in payload.items()
           if not (k.endswith("From") and _refs_only(v))}  # fmt: skip
    for k, v in payload.items():
        if not (k.endswith("From") and _refs_only(v)):
            continue
        if is_ref(v):
            out[k[:-4]] = value(ref_of(v))
        else:
            out[k[:-4]] = {**(out.get(k[:-4]) or {}), **{n: value(ref_of(r)) for n, r in v.items()}}
    return out


def from_env(env: Mapping[str, str] | None = None) -> dict[Ref, str]:
    """The values a browser Job's pod spec put in its environment, by reference."""
    e = os.environ if env is None else env
    refs = [tuple(r) for r in json.loads(e.get(REFS_ENV) or "[]")]
    return {(str(r[0]), str(r[1])): e[f"{SECRET_ENV}{i}"] for i, r in enumerate(refs)}


class Redactor:
    """Replaces every secret value by [redacted] in text, JSON and text artifacts."""

    MIN_LENGTH = 4  # shorter values would redact ordinary text ("a", "on")

    def __init__(self, values: Iterable[str] = ()) -> None:
        # As written and as JSON writes it (quotes, backslashes escaped); longest first,
        # so a value containing another is redacted whole.
        plain = {v for v in values if len(v) >= self.MIN_LENGTH}
        forms = plain | {json.dumps(v)[1:-1] for v in plain}
        self.values = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, s: str) -> str:
        for v in self.values:
            s = s.replace(v, REDACTED)
        return s

    def data(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [self.data(x) for x in v]
        if isinstance(v, Mapping):
            return {self.text(str(k)): self.data(x) for k, x in v.items()}
        return v

    def raw(self, b: bytes) -> bytes:
        for v in self.values:
            b = b.replace(v.encode(), REDACTED.encode())
        return b

    def artifact(self, content: bytes, content_type: str) -> bytes:
        """A text or JSON artifact redacted; a zip (a Playwright trace) entry by entry;
        images are left as they are (a screenshot of a typed value cannot be redacted)."""
        if not self:
            return content
        if content_type.startswith(("text/", "application/json")):
            return self.raw(content)
        if content_type == "application/zip":
            src = zipfile.ZipFile(io.BytesIO(content))
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
                for info in src.infolist():
                    dst.writestr(info, self.raw(src.read(info)))
            return out.getvalue()
        return content
