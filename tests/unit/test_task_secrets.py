"""Secrets in task payloads by reference: found, handed over, folded in, redacted."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from wallestars_operator.manifests import AttemptConfig, browser_job
from wallestars_sdk import secrets as ts

PW = {"secretKeyRef": {"name": "login", "key": "password"}}
TOKEN = {"secretKeyRef": {"name": "api", "key": "token"}}
E2E: dict[str, Any] = {"url": "https://shop.example/login", "steps": [
    {"action": "fill", "selector": "#user", "value": "ada"},
    {"action": "fill", "selector": "#pw", "valueFrom": PW},
    {"action": "click", "selector": "#go"}]}  # fmt: skip
API: dict[str, Any] = {"requests": [
    {"url": "https://api.example/a", "headers": {"Accept": "application/json"},
     "headersFrom": {"Authorization": TOKEN}},
    {"url": "https://api.example/b", "method": "POST", "bodyFrom": PW, "headersFrom": {"X-Token": TOKEN}}]}  # fmt: skip
VALUES = {("login", "password"): "s3cr3t-pw", ("api", "token"): "Bearer tok-123"}


def test_references_are_found_once_each_in_order() -> None:
    assert ts.references(E2E) == [("login", "password")]
    assert ts.references(API) == [("api", "token"), ("login", "password")]
    assert ts.references({"data": {"secretKeyRef": {"name": "x", "key": "y"}}}) == []  # not *From


def test_resolve_folds_each_reference_into_its_field() -> None:
    e2e = ts.resolve(E2E, VALUES.__getitem__)
    assert e2e["steps"][1] == {"action": "fill", "selector": "#pw", "value": "s3cr3t-pw"}
    api = ts.resolve(API, VALUES.__getitem__)
    assert api["requests"][0]["headers"] == {"Accept": "application/json",
                                            "Authorization": "Bearer tok-123"}  # fmt: skip
    assert api["requests"][1]["body"] == "s3cr3t-pw" and "bodyFrom" not in api["requests"][1]
    assert "headersFrom" not in api["requests"][0]
    assert ts.resolve(E2E, VALUES.__getitem__) != E2E and E2E["steps"][1]["valueFrom"] == PW


def test_a_browser_job_gets_the_values_from_the_secret_never_from_the_operator() -> None:
    task = {"metadata": {"name": "login", "namespace": "shop", "uid": "u-1"},
            "spec": {"type": "e2e-test", "payload": E2E}}  # fmt: skip
    agent = {"metadata": {"name": "chrome"}, "spec": {"type": "browser", "browser": {}}}
    job = browser_job(task, agent, 1, AttemptConfig(callback_base="http://hooks:8080"))
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env[ts.REFS_ENV]["value"]) == [["login", "password"]]
    assert env[f"{ts.SECRET_ENV}0"] == {"name": f"{ts.SECRET_ENV}0",
                                       "valueFrom": {"secretKeyRef": {"name": "login", "key": "password"}}}  # fmt: skip
    assert "s3cr3t" not in json.dumps(job)
    # The agent's side: values by reference from that environment.
    got = ts.from_env({ts.REFS_ENV: env[ts.REFS_ENV]["value"], f"{ts.SECRET_ENV}0": "s3cr3t-pw"})
    assert got == {("login", "password"): "s3cr3t-pw"}


def test_the_redactor_removes_every_form_of_a_value() -> None:
    r = ts.Redactor(["s3cr3t-pw", 'we"ird\\pw', "ab"])  # "ab": too short to redact safely
    assert r.text("typed s3cr3t-pw here") == "typed [redacted] here"
    assert r.data({"echo": ["s3cr3t-pw", {"s3cr3t-pw": 1}], "n": 3}) == {
        "echo": ["[redacted]", {"[redacted]": 1}], "n": 3}  # fmt: skip
    body = json.dumps({"page": 'said we"ird\\pw and ab'}).encode()
    assert b"weird" not in r.raw(body) and b"[redacted]" in r.raw(body) and b"ab" in r.raw(body)
    assert r.artifact(b"log: s3cr3t-pw", "text/plain; charset=utf-8") == b"log: [redacted]"
    assert r.artifact(b"\x89PNGs3cr3t-pw", "image/png") == b"\x89PNGs3cr3t-pw"  # images as they are
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("trace.trace", '{"params":{"value":"s3cr3t-pw"}}')
        z.writestr("resources/x.txt", "s3cr3t-pw")
    out = zipfile.ZipFile(io.BytesIO(r.artifact(buf.getvalue(), "application/zip")))
    assert all(b"s3cr3t" not in out.read(n) for n in out.namelist())
    assert not ts.Redactor([]) and ts.Redactor([]).raw(b"x") == b"x"


def test_a_missing_value_is_refused_by_name() -> None:
    from wallestars_cloud.handler import Failed, secret_value

    with pytest.raises(Failed, match="no value for Secret login key password"):
        secret_value({}, ("login", "password"))


def test_basic_auth_and_cookies_take_their_values_from_secrets_too() -> None:
    payload = {"url": "https://shop.example/", "basicAuth": {"username": "ada", "passwordFrom": PW},
               "cookies": [{"name": "session", "valueFrom": TOKEN}, {"name": "lang", "value": "en"}]}  # fmt: skip
    assert ts.references(payload) == [("login", "password"), ("api", "token")]
    got = ts.resolve(payload, VALUES.__getitem__)
    assert got["basicAuth"] == {"username": "ada", "password": "s3cr3t-pw"}
    assert got["cookies"] == [
        {"name": "session", "value": "Bearer tok-123"},
        {"name": "lang", "value": "en"},
    ]
    from wallestars_browser import payloads

    parsed = payloads.parse("screenshot", got)
    assert parsed.basic_auth is not None and parsed.basic_auth.password == "s3cr3t-pw"  # type: ignore[attr-defined]
