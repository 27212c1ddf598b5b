"""An example of a user-defined task type: the only file a user needs to write.

An AgentTask with ``type: custom`` and ``payload.data.kind: word-count`` runs it:

    spec: {type: custom, payload: {data: {kind: word-count, text: "to be or not to be"}}}
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from wallestars_cloud import Invocation, task
from wallestars_cloud.handler import Failed


@task("custom")
async def custom(payload: dict[str, Any], inv: Invocation) -> dict[str, Any]:
    data = payload.get("data") or {}
    if data.get("kind") != "word-count":
        raise Failed("UserError", f"unknown custom kind {data.get('kind')!r} (known: word-count)")
    words = str(data.get("text", "")).lower().split()
    return {"words": len(words), "top": Counter(words).most_common(3)}
