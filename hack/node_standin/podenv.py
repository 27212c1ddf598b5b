"""A container's environment, resolved the way the kubelet resolves it.

Pure: the caller passes lookups for Secrets and ConfigMaps, so this is unit-tested
without an API server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Obj = Mapping[str, Any]
# (namespace-local name) -> data (already base64-decoded for Secrets), or None if absent.
Lookup = Callable[[str], Mapping[str, str] | None]


class EnvError(ValueError):
    """The container cannot start: a referenced Secret, ConfigMap or key is missing."""


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, unknown stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _REF.sub(sub, value)


def field_ref(pod: Obj, path: str, host_ip: str) -> str:
    meta = pod.get("metadata", {})
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": host_ip,
        "status.podIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted(meta.get(path.split(".")[1], {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 1e-3, "": 1,
}  # fmt: skip


def quantity(q: str) -> float:
    """A Kubernetes resource quantity as a number (enough of the grammar for env use)."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise EnvError(f"cannot read quantity {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def resource_ref(container: Obj, ref: Obj, node_allocatable: Mapping[str, str]) -> str:
    resource = ref["resource"]  # e.g. limits.cpu
    kind, _, name = resource.partition(".")
    value = container.get("resources", {}).get(kind, {}).get(name)
    if value is None:
        # As the kubelet does: an unset limit reads as the node's allocatable.
        value = node_allocatable.get(name, "0")
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(quantity(value) / divisor))


def container_env(
    pod: Obj,
    container: Obj,
    *,
    secret: Lookup,
    config_map: Lookup,
    base: Mapping[str, str],
    host_ip: str = "127.0.0.1",
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one container: ``base`` (service variables) then envFrom, then env."""
    env: dict[str, str] = dict(base)
    alloc = node_allocatable or {}
    for src in container.get("envFrom", []) or []:
        prefix = src.get("prefix", "")
        if "secretRef" in src:
            ref, lookup, kind = src["secretRef"], secret, "Secret"
        elif "configMapRef" in src:
            ref, lookup, kind = src["configMapRef"], config_map, "ConfigMap"
        else:
            continue
        data = lookup(ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{kind} "{ref["name"]}" not found')
        for k, v in data.items():
            env[prefix + k] = v
    for var in container.get("env", []) or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"], host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_ref(container, vf["resourceFieldRef"], alloc)
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            is_secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef"] if is_secret else vf["configMapKeyRef"]
            kind = "Secret" if is_secret else "ConfigMap"
            data = (secret if is_secret else config_map)(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind} "{ref["name"]}"'
                if data is None:
                    raise EnvError(f"{what} not found")
                raise EnvError(f"couldn't find key {ref['key']} in {what}")
            env[name] = data[ref["key"]]
    return env


def command_line(container: Obj, env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expanded. The image's entrypoint is unknown here."""
    command = list(container.get("command") or [])
    if not command:
        raise EnvError(
            f'container "{container.get("name")}" has no command; the node stand-in runs '
            "processes on the host and cannot read an image's ENTRYPOINT"
        )
    return [expand(a, env) for a in command + list(container.get("args") or [])]
