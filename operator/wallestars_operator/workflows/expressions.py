"""Values from earlier steps in a step's payload: ``{{ steps.<name>.<path> }}`` (pure).

A path is names and list indices (``steps.scrape.result.data.items[0].id``,
``steps.login.result.data["api-token"]``); nothing is executed. A string that is one
expression and nothing else becomes the value with its type (a number, a list, an
object); inside other text it becomes text (JSON for what is not a string). A path
that leads nowhere is an error that says how far it got.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

EXPR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
SEGMENT = re.compile(
    r"""\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\s*"([^"]*)"\s*\]|\[\s*'([^']*)'\s*\]"""
)


class ExpressionError(ValueError):
    """An expression that cannot be evaluated: what and why."""


def parse_path(text: str) -> list[str | int]:
    """``a.b[0]["c-d"]`` -> ["a", "b", 0, "c-d"]; ExpressionError if it is not a path."""
    out: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = SEGMENT.match(text, pos)
        if not m or m.end() == pos or (pos == 0 and text.startswith(".")):
            raise ExpressionError(f'{text!r} is not a path (names, [index], ["key"])')
        name, index, dq, sq = m.groups()
        if index is not None:
            out.append(int(index))
        elif name is not None:
            out.append(name)
        else:
            out.append(dq if dq is not None else sq)
        pos = m.end()
    if not out:
        raise ExpressionError("an empty expression")
    return out


def lookup(root: Mapping[str, Any], text: str) -> Any:
    path = parse_path(text)
    value: Any = root
    walked: list[str] = []
    for seg in path:
        where = "".join(walked) or "the workflow"
        if isinstance(seg, int):
            if not isinstance(value, list) or seg >= len(value):
                size = f"a list of {len(value)}" if isinstance(value, list) else type_name(value)
                raise ExpressionError(f"{text}: no item [{seg}] in {where} ({size})")
            value = value[seg]
            walked.append(f"[{seg}]")
        else:
            if not isinstance(value, Mapping) or seg not in value:
                known = f"; it has {sorted(value)[:10]}" if isinstance(value, Mapping) else ""
                raise ExpressionError(f"{text}: no {seg!r} in {where} ({type_name(value)}{known})")
            value = value[seg]
            walked.append(seg if not walked else f".{seg}")
    return value


def type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number" if isinstance(v, int | float) else "a value")  # fmt: skip


def render(value: Any, root: Mapping[str, Any]) -> Any:
    """``value`` with every expression in its strings replaced (recursively)."""
    if isinstance(value, str):
        whole = EXPR.fullmatch(value.strip())
        if whole:
            return lookup(root, whole[1])
        return EXPR.sub(lambda m: as_text(lookup(root, m[1])), value)
    if isinstance(value, list):
        return [render(v, root) for v in value]
    if isinstance(value, Mapping):
        return {k: render(v, root) for k, v in value.items()}
    return value


def as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def referenced_steps(value: Any) -> set[str]:
    """The steps whose results ``value``'s expressions read."""
    found: set[str] = set()
    if isinstance(value, str):
        for m in EXPR.finditer(value):
            try:
                path = parse_path(m[1])
            except ExpressionError:
                continue
            if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], str):
                found.add(path[1])
    elif isinstance(value, list):
        for v in value:
            found |= referenced_steps(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            found |= referenced_steps(v)
    return found


def condition(text: str, root: Mapping[str, Any]) -> bool:
    """A step's `when`: one expression (its value's truth), or two sides compared with
    `==` or `!=` (each an expression or a literal: a number, true/false, "text" or a bare
    word). Nothing else: no code, no functions."""
    whole = EXPR.fullmatch(text.strip())
    if whole:
        return truthy(lookup(root, whole[1]))
    for op in ("!=", "=="):
        if op in text:
            left, right = (side(t.strip(), root) for t in text.split(op, 1))
            return bool(left == right) if op == "==" else bool(left != right)
    return truthy(render(text.strip(), root))


def side(text: str, root: Mapping[str, Any]) -> Any:
    if EXPR.search(text):
        return render(text, root)
    try:
        return json.loads(text)
    except ValueError:
        return text


def truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("", "false", "0", "no", "null")
    return bool(v)
