"""What a component keeps of an object it caches (the operator's watch caches, the
webhook service's last-written objects): never the API server's bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def without_bookkeeping(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without metadata.managedFields and kubectl's last-applied copy: neither is
    read by any decision, and together they are often most of a small object. A shallow
    copy: the source is not modified."""
    out = dict(obj)
    meta = obj.get("metadata") or {}
    if "managedFields" in meta or "annotations" in meta:
        m = {k: v for k, v in meta.items() if k != "managedFields"}
        ann = m.get("annotations")
        if ann and LAST_APPLIED in ann:
            m["annotations"] = {k: v for k, v in ann.items() if k != LAST_APPLIED}
        out["metadata"] = m
    return out
