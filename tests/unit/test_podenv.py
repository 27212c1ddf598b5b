"""The node stand-in's env resolution, as the kubelet does it."""

from __future__ import annotations

from typing import Any

import pytest
from node_standin.podenv import EnvError, command_line, container_env, expand

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "x", "tier": "web"},
    },
    "spec": {"nodeName": "n1", "serviceAccountName": "sa"},
}
SECRETS = {"s": {"k": "secret-value", "other": "o"}}
CMS = {"c": {"k": "cm-value"}}


def env_of(container: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    return container_env(POD, container, secret=SECRETS.get, config_map=CMS.get, base=base or {})


def test_expand_known_unknown_and_escaped() -> None:
    env = {"A": "1"}
    assert expand("x$(A)y", env) == "x1y"
    assert expand("$(B)", env) == "$(B)"
    assert expand("$$(A)", env) == "$(A)"


def test_literal_values_expand_earlier_vars_in_order() -> None:
    env = env_of(
        {
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(C)"},
                {"name": "C", "value": "c"},
            ]
        }
    )
    assert env["B"] == "a-$(C)"  # C is defined later, so it is left as written


def test_secret_configmap_field_refs() -> None:
    env = env_of(
        {
            "env": [
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "U", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ]
        }
    )
    assert env == {
        "S": "secret-value",
        "C": "cm-value",
        "N": "p",
        "U": "u-1",
        "L": "web",
        "IP": "127.0.0.1",
    }


def test_env_from_with_prefix_and_env_wins() -> None:
    env = env_of(
        {
            "envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}],
            "env": [{"name": "S_k", "value": "override"}],
        },
        base={"PATH": "/bin"},
    )
    assert env == {"PATH": "/bin", "S_k": "override", "S_other": "o"}


def test_missing_secret_key_and_optional() -> None:
    with pytest.raises(EnvError, match='Secret "nope" not found'):
        env_of(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}
        )
    with pytest.raises(EnvError, match='couldn\'t find key zz in Secret "s"'):
        env_of({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "zz"}}}]})
    env = env_of(
        {
            "env": [
                {
                    "name": "X",
                    "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
                }
            ]
        }
    )
    assert "X" not in env


def test_resource_field_ref_uses_limit_or_node_allocatable() -> None:
    c = {
        "resources": {"limits": {"memory": "1Gi"}},
        "env": [
            {
                "name": "M",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    env = container_env(
        POD, c, secret=SECRETS.get, config_map=CMS.get, base={}, node_allocatable={"cpu": "2500m"}
    )
    assert env == {"M": "1024", "CPU": "3"}


def test_command_line_expands_and_refuses_image_entrypoints() -> None:
    assert command_line({"command": ["echo"], "args": ["$(A)", "b"]}, {"A": "a"}) == [
        "echo",
        "a",
        "b",
    ]
    with pytest.raises(EnvError, match="has no command"):
        command_line({"name": "c", "args": ["x"]}, {})
