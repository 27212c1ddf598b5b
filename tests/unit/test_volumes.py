"""The node stand-in's volume contents: what each volume type puts in its files."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from node_standin.podenv import EnvError
from node_standin.volumes import TokenSpec, referenced, secret_data, token_specs, volume_content

POD: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {}}
SECRETS = {"s": {"a": "1", "b": "2"}}
CMS = {"kube-root-ca.crt": {"ca.crt": "CA"}}
TOKEN = TokenSpec("", 3607)


def content(vol: dict[str, Any]) -> dict[str, tuple[bytes, int]]:
    return volume_content(
        POD, vol, secret=SECRETS.get, config_map=CMS.get, tokens={TOKEN: "tok"}
    ).files


def test_secret_all_keys_and_items_with_modes() -> None:
    assert content({"name": "v", "secret": {"secretName": "s"}}) == {
        "a": (b"1", 0o644),
        "b": (b"2", 0o644),
    }
    got = content(
        {
            "name": "v",
            "secret": {
                "secretName": "s",
                "defaultMode": 0o400,
                "items": [{"key": "b", "path": "sub/b.txt"}],
            },
        }
    )
    assert got == {"sub/b.txt": (b"2", 0o400)}


def test_missing_secret_fails_unless_optional() -> None:
    with pytest.raises(EnvError, match='Secret "x" not found'):
        content({"name": "v", "secret": {"secretName": "x"}})
    assert content({"name": "v", "secret": {"secretName": "x", "optional": True}}) == {}


def test_service_account_projection_like_the_admission_plugin_adds() -> None:
    vol = {
        "name": "kube-api-access-abcde",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    got = volume_content(POD, vol, secret=SECRETS.get, config_map=CMS.get, tokens={TOKEN: "tok"})
    assert got.files == {"token": (b"tok", 420), "ca.crt": (b"CA", 420), "namespace": (b"ns", 420)}
    assert got.tokens == {"token": TOKEN}
    assert token_specs({"spec": {"volumes": [vol]}}) == {TOKEN}


def test_empty_dir_and_unsupported() -> None:
    assert content({"name": "v", "emptyDir": {"medium": "Memory"}}) == {}
    with pytest.raises(EnvError, match="not supported"):
        content({"name": "v", "hostPath": {"path": "/"}})


def test_referenced_names_and_secret_decoding() -> None:
    spec = {
        "volumes": [
            {"name": "a", "secret": {"secretName": "s1"}},
            {"name": "b", "configMap": {"name": "c1"}},
        ],
        "containers": [
            {
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "c2"}}],
            }
        ],
    }
    assert referenced({"spec": spec}) == ({"s1", "s2"}, {"c1", "c2"})
    assert secret_data({"data": {"k": base64.b64encode(b"v").decode()}}) == {"k": "v"}
