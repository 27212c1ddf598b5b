"""Azure Functions app (Python v2 programming model) for Wallestars cloud agents.

Azure ends an HTTP-triggered execution after 230 s (the front end's idle timeout), so
the HTTP trigger only checks the invocation, puts it on a Storage queue and answers
202 at once; a queue trigger runs the task and calls back to the webhook service. The
operator POSTs to the HTTP trigger with the function key (`x-functions-key`) it reads
from the Secret the Agent names.
"""

from __future__ import annotations

import asyncio
import json
import logging

import azure.functions as func
import my_tasks  # type: ignore[import-not-found]  # noqa: F401  (registers your task types)
from pydantic import ValidationError
from wallestars_cloud import Invocation, handle

QUEUE = "wallestars-invocations"
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def accept(req: func.HttpRequest, queue: func.Out[str]) -> func.HttpResponse:
    """The HTTP trigger: 202 once the invocation is queued, 400 if it is not one."""
    try:
        event = req.get_json()
        inv = Invocation.model_validate(event)
    except (ValueError, ValidationError) as e:
        return func.HttpResponse(f"not a Wallestars invocation: {e}", status_code=400)
    queue.set(json.dumps(event))
    logging.info("queued %s", inv.idempotencyKey)
    return func.HttpResponse(json.dumps({"queued": inv.idempotencyKey}), status_code=202,
                             mimetype="application/json")  # fmt: skip


def run(msg: func.QueueMessage) -> None:
    """The queue trigger: run the task; its outcome goes to the webhook service. Never
    raises (a raise would make the queue deliver it again; retries are the operator's)."""
    logging.info("ran: %s", asyncio.run(handle(json.loads(msg.get_body()))))


def health(req: func.HttpRequest) -> func.HttpResponse:
    """The Agent's healthURL (spec.cloud.azure.healthURL)."""
    return func.HttpResponse("ok")


app.route(route="wallestars", methods=["POST"])(
    app.queue_output(arg_name="queue", queue_name=QUEUE, connection="AzureWebJobsStorage")(accept)
)
app.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="AzureWebJobsStorage")(run)
app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)(health)
