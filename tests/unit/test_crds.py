"""The CRDs as files: one source of truth, copied into the chart without drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO

API_FILES = sorted((REPO / "crds").glob("*.yaml"))
CRDS = [p for p in API_FILES if "kind: CustomResourceDefinition" in p.read_text()]
CHART = REPO / "charts" / "wallestars-agents"


def test_chart_carries_an_identical_copy_of_every_crd() -> None:
    """CRDs go to the chart's crds/ (Helm installs them first); the admission policy, which
    Helm allows only among templates, to templates/. Both byte for byte."""
    assert CRDS, "no CRDs in crds/"
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(chart) == [p.name for p in CRDS], (
        "chart CRDs differ in name; run `make sync-crds`"
    )
    for p in API_FILES:
        copy = CHART / ("crds" if p in CRDS else "templates") / p.name
        assert copy.exists() and copy.read_bytes() == p.read_bytes(), (
            f"{p.name} drifted from crds/; run `make sync-crds`"
        )


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += walk(sub, f"{path}.{name}")
    if "items" in schema:
        out += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += walk(schema["additionalProperties"], f"{path}{{}}")
    return out


SCHEMAS = [
    p for p in CRDS if next(yaml.safe_load_all(p.read_text()))["kind"] == "CustomResourceDefinition"
]


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_schema_is_structural_and_bounded(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    for where, node in walk(version["schema"]["openAPIV3Schema"]):
        # Structural: every node says its type (or is int-or-string / free-form by intent).
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")  # free-form by intent
        ), f"{where} has no type"
        # Bounded, so CEL cost stays low and nobody stores megabytes in a spec.
        plain_string = node.get("type") == "string" and not {"enum", "format"} & node.keys()
        if plain_string and where not in (".apiVersion", ".kind"):
            assert "maxLength" in node or "pattern" in node, f"{where} string has no maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{where} array has no maxItems"
