"""The cloud handler templates as users deploy them: the SAM template, the example user
task, the Azure host settings (pure: the Lambda zip is built in tests/integration)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import sys
from typing import Any

import pytest
import yaml
from harness import REPO

LAMBDA = REPO / "agent_images" / "aws_lambda"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, !Sub) read as plain values."""


for tag in ("!Ref", "!GetAtt", "!Sub"):
    CfnLoader.add_constructor(tag, lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def test_sam_template_leaves_retries_to_the_operator() -> None:
    t: dict[str, Any] = yaml.load((LAMBDA / "template.yaml").read_text(), Loader=CfnLoader)  # noqa: S506
    fn = t["Resources"]["AgentFunction"]["Properties"]
    assert fn["Handler"] == "handler.handler"
    invoke = fn["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 0
    assert invoke["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    policy = json.loads(
        t["Outputs"]["InvokePolicy"]["Value"].replace("${AgentFunction.Arn}", "arn:x")
    )
    [stmt] = policy["Statement"]
    assert sorted(stmt["Action"]) == ["lambda:GetFunction", "lambda:InvokeFunction"]
    assert stmt["Resource"] == ["arn:x", "arn:x:*"]  # this function only, no wildcard


def test_example_user_task_and_echo() -> None:
    sys.path.insert(0, str(LAMBDA))
    my_tasks = importlib.import_module("my_tasks")
    from wallestars_cloud.handler import Failed, Invocation
    from wallestars_cloud.tasks import echo

    inv = Invocation.model_validate({"task": {"namespace": "n", "name": "t", "uid": "u"}, "type": "custom",
                                     "attempt": 2, "callbackUrl": "http://x/", "key": "k", "idempotencyKey": "u/2"})  # fmt: skip
    out = asyncio.run(
        my_tasks.custom({"data": {"kind": "word-count", "text": "to be or not to be"}}, inv)
    )
    assert out == {"words": 6, "top": [("to", 2), ("be", 2), ("or", 1)]}
    with pytest.raises(Failed) as e:
        asyncio.run(my_tasks.custom({"data": {"kind": "other"}}, inv))
    assert e.value.code == "UserError"
    echoed = asyncio.run(echo({"a": 1}, inv))
    assert echoed == {"echo": {"a": 1}, "attempt": 2, "idempotencyKey": "u/2"}


def test_azure_queue_does_not_retry_either() -> None:
    host = json.loads((REPO / "agent_images" / "azure_functions" / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == 1


def test_google_function_refuses_what_is_not_an_invocation() -> None:
    """400 with the reason, and no task started (the 202 path runs in the GCP e2e test)."""
    gcp = REPO / "agent_images" / "gcp_functions"
    sys.path.insert(0, str(gcp))
    spec = importlib.util.spec_from_file_location("gcp_main", gcp / "main.py")
    assert spec and spec.loader
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)

    class Req:
        def __init__(self, body: str) -> None:
            self.body = body

        def get_json(self, force: bool = False, silent: bool = False) -> Any:
            return json.loads(self.body)

    for body in ("not json", '{"type": "echo"}', "[1]"):
        text, status, _ = main.agent(Req(body))
        assert status == 400 and text.startswith("not a Wallestars invocation"), (body, text)
    assert main.RUNNING == []
