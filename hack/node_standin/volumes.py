"""What each pod volume holds, as files: pure, given the Secrets, ConfigMaps and tokens.

Supported: secret, configMap, projected (secret, configMap, downwardAPI,
serviceAccountToken), downwardAPI and emptyDir. The node stand-in writes these
files under ``<root>/pods/<uid>/volumes/<name>/`` and bind-mounts each at its
``mountPath`` inside the process's own mount namespace.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from node_standin.podenv import EnvError, Lookup, field_ref

Obj = Mapping[str, Any]
DEFAULT_MODE = 0o644


@dataclass(frozen=True)
class TokenSpec:
    """A projected service-account token to request: audience and lifetime."""

    audience: str
    expiration_seconds: int


@dataclass
class VolumeContent:
    """Files of one volume (path relative to the volume -> bytes, mode); empty for emptyDir."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    # path -> token spec, for files that hold a token (refreshed before they expire)
    tokens: dict[str, TokenSpec] = field(default_factory=dict)


def secret_data(secret: Obj) -> dict[str, str]:
    """A Secret's data, decoded, with stringData folded in as the API server does."""
    out = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (secret.get("data") or {}).items()
    }
    out.update(secret.get("stringData") or {})
    return out


def _keyed(
    kind: str,
    name: str,
    data: Mapping[str, str] | None,
    items: list[Obj] | None,
    optional: bool,
    mode: int,
) -> dict[str, tuple[bytes, int]]:
    if data is None:
        if optional:
            return {}
        raise EnvError(f'{kind} "{name}" not found')
    if not items:
        return {k: (v.encode(), mode) for k, v in data.items()}
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise EnvError(f'{kind} "{name}" has no key {key!r}')
        out[item["path"]] = (data[key].encode(), item.get("mode", mode))
    return out


def _downward(pod: Obj, items: list[Obj], mode: int) -> dict[str, tuple[bytes, int]]:
    out: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if "fieldRef" not in item:
            raise EnvError("downwardAPI resourceFieldRef volumes are not supported by the stand-in")
        value = field_ref(pod, item["fieldRef"]["fieldPath"], "127.0.0.1")
        out[item["path"]] = (value.encode(), item.get("mode", mode))
    return out


def token_specs(pod: Obj) -> set[TokenSpec]:
    """Every token the pod's projected volumes ask for (to be fetched before planning)."""
    specs: set[TokenSpec] = set()
    for vol in pod.get("spec", {}).get("volumes", []) or []:
        for src in (vol.get("projected") or {}).get("sources", []) or []:
            sat = src.get("serviceAccountToken")
            if sat:
                specs.add(
                    TokenSpec(sat.get("audience", ""), int(sat.get("expirationSeconds", 3600)))
                )
    return specs


def referenced(pod: Obj) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps the pod's volumes and env refer to."""
    secrets: set[str] = set()
    cms: set[str] = set()
    spec = pod.get("spec", {})
    for vol in spec.get("volumes", []) or []:
        if "secret" in vol:
            secrets.add(vol["secret"]["secretName"])
        if "configMap" in vol:
            cms.add(vol["configMap"]["name"])
        for src in (vol.get("projected") or {}).get("sources", []) or []:
            if "secret" in src:
                secrets.add(src["secret"]["name"])
            if "configMap" in src:
                cms.add(src["configMap"]["name"])
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for src in c.get("envFrom", []) or []:
            if "secretRef" in src:
                secrets.add(src["secretRef"]["name"])
            if "configMapRef" in src:
                cms.add(src["configMapRef"]["name"])
        for var in c.get("env", []) or []:
            vf = var.get("valueFrom") or {}
            if "secretKeyRef" in vf:
                secrets.add(vf["secretKeyRef"]["name"])
            if "configMapKeyRef" in vf:
                cms.add(vf["configMapKeyRef"]["name"])
    return secrets, cms


def volume_content(
    pod: Obj,
    vol: Obj,
    *,
    secret: Lookup,
    config_map: Lookup,
    tokens: Mapping[TokenSpec, str],
) -> VolumeContent:
    name = vol.get("name", "")
    if "emptyDir" in vol:
        return VolumeContent()
    if "secret" in vol:
        s = vol["secret"]
        mode = s.get("defaultMode", DEFAULT_MODE)
        files = _keyed(
            "Secret",
            s["secretName"],
            secret(s["secretName"]),
            s.get("items"),
            s.get("optional", False),
            mode,
        )
        return VolumeContent(files)
    if "configMap" in vol:
        c = vol["configMap"]
        mode = c.get("defaultMode", DEFAULT_MODE)
        files = _keyed(
            "ConfigMap",
            c["name"],
            config_map(c["name"]),
            c.get("items"),
            c.get("optional", False),
            mode,
        )
        return VolumeContent(files)
    if "downwardAPI" in vol:
        d = vol["downwardAPI"]
        return VolumeContent(_downward(pod, d.get("items", []), d.get("defaultMode", DEFAULT_MODE)))
    if "projected" in vol:
        p = vol["projected"]
        mode = p.get("defaultMode", DEFAULT_MODE)
        content = VolumeContent()
        for src in p.get("sources", []) or []:
            if "secret" in src:
                s = src["secret"]
                content.files.update(
                    _keyed(
                        "Secret",
                        s["name"],
                        secret(s["name"]),
                        s.get("items"),
                        s.get("optional", False),
                        mode,
                    )
                )
            elif "configMap" in src:
                c = src["configMap"]
                content.files.update(
                    _keyed(
                        "ConfigMap",
                        c["name"],
                        config_map(c["name"]),
                        c.get("items"),
                        c.get("optional", False),
                        mode,
                    )
                )
            elif "downwardAPI" in src:
                content.files.update(_downward(pod, src["downwardAPI"].get("items", []), mode))
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                spec = TokenSpec(sat.get("audience", ""), int(sat.get("expirationSeconds", 3600)))
                content.files[sat["path"]] = (tokens[spec].encode(), mode)
                content.tokens[sat["path"]] = spec
            else:
                raise EnvError(f"volume {name!r}: unsupported projected source {sorted(src)}")
        return content
    raise EnvError(
        f"volume {name!r}: type {sorted(set(vol) - {'name'})} is not supported by the node stand-in"
    )
