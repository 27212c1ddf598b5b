"""Run one invocation: parse it, run its task type, call back (success or typed failure)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from wallestars_sdk import AgentClient
from wallestars_sdk import secrets as task_secrets
from wallestars_sdk.client import AgentConfig, CallbackRejected
from wallestars_sdk.keys import decode_key

log = logging.getLogger("wallestars.cloud")


class TaskRef(BaseModel):
    namespace: str
    name: str
    uid: str


class Invocation(BaseModel):
    """What the operator sends a cloud agent (operator/wallestars_operator/manifests.py)."""

    model_config = ConfigDict(extra="ignore")

    task: TaskRef
    type: str
    payload: dict[str, Any] = {}
    attempt: int
    agentId: str = "cloud-agent"
    callbackUrl: str
    key: str
    timeoutSeconds: int = 300
    deadline: str | None = None
    idempotencyKey: str = ""
    # The webhook service's CA (PEM) when it is the installation's own: callbacks verify it.
    callbackCA: str = ""
    # Under mutual TLS: the attempt's client certificate and key (PEM), {cert, key}.
    clientCertificate: dict[str, str] | None = None
    # Values of the Secrets the payload refers to ("name/key" -> value; only from Secrets
    # that opted in, and only sent over https): folded into the payload, never echoed.
    secrets: dict[str, str] = {}


class Failed(Exception):
    """A task's checks did not pass (AssertionFailed) or its input is wrong (UserError):
    retrying cannot help. ``data`` still travels with the failure."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


TaskFn = Callable[[dict[str, Any], Invocation], Awaitable[dict[str, Any]]]
TASKS: dict[str, TaskFn] = {}


F = TypeVar("F", bound=TaskFn)


def task(name: str) -> Callable[[F], F]:
    """Register a task type: ``async def fn(payload, invocation) -> result data``."""

    def register(fn: F) -> F:
        TASKS[name] = fn
        return fn

    return register


def client(inv: Invocation) -> AgentClient:
    config = AgentConfig(
        callback_url=inv.callbackUrl, task_uid=inv.task.uid, task_namespace=inv.task.namespace,
        task_name=inv.task.name, attempt=inv.attempt, agent_id=inv.agentId,
        callback_ca=inv.callbackCA,
        client_cert_pem=(inv.clientCertificate or {}).get("cert", ""),
        client_key_pem=(inv.clientCertificate or {}).get("key", ""),
    )  # fmt: skip
    return AgentClient(config, decode_key(inv.key))


def secret_value(values: dict[str, str], ref: tuple[str, str]) -> str:
    try:
        return values[f"{ref[0]}/{ref[1]}"]
    except KeyError:
        raise Failed("UserError", f"the invocation carries no value for Secret {ref[0]} key "
                     f"{ref[1]}") from None  # fmt: skip


async def handle(event: dict[str, Any]) -> str:
    """Run the invocation ``event``; returns how it ended (for the provider's log)."""
    from wallestars_cloud import tasks  # noqa: F401 (registers the built-in task types)

    try:
        inv = Invocation.model_validate(event)
    except ValidationError as e:
        # No callback URL or key to answer with: the provider's log is all there is.
        log.error("not a Wallestars invocation: %s", e)
        return "invalid-invocation"
    async with client(inv) as agent:
        agent.redactor = task_secrets.Redactor(inv.secrets.values())
        try:
            payload = task_secrets.resolve(inv.payload, lambda r: secret_value(inv.secrets, r))
            fn = TASKS.get(inv.type)
            if fn is None:
                raise Failed("UserError", f"task type {inv.type!r} is not known to this function "
                             f"(known: {sorted(TASKS)})")  # fmt: skip
            await agent.progress(10)
            data = await fn(payload, inv)
            await agent.succeed(data)
            return "succeeded"
        except Failed as e:
            await agent.fail(e.code, e.message, retryable=False, data=e.data)
            return e.code
        except CallbackRejected as e:
            log.warning("callback refused (%s): %s", inv.idempotencyKey, e)  # e.g. 410 on a repeat
            return f"refused-{e.status}"
        except Exception as e:  # the task's own failure: retryable by the operator's policy
            await agent.fail("AgentError", f"{type(e).__name__}: {e}", retryable=True,
                             stack="".join(traceback.format_exception(e)))  # fmt: skip
            return "error"
