"""Google Cloud Run functions (Cloud Functions gen 2) entry point for Wallestars cloud agents.

The same handler as the Lambda and Azure templates (`wallestars_cloud.handle`) behind an
HTTP function. Google's front end checks the caller's ID token before the request gets
here (deploy with `--no-allow-unauthenticated`, and grant the operator's service account
`roles/run.invoker`); the operator mints that token (its Agent sets
`spec.cloud.http.googleIdToken`). The function answers 202 at once and runs the task in
the background, so the operator's call never waits for the task; that needs CPU after
the response (`--no-cpu-throttling`, instance-based billing). Deploy:

    gcloud functions deploy wallestars-agent --gen2 --runtime python311 --region REGION \\
      --trigger-http --no-allow-unauthenticated --entry-point agent --source . \\
      --timeout 3600 --no-cpu-throttling
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import my_tasks  # type: ignore[import-not-found]  # noqa: F401  (registers your task types)
from pydantic import ValidationError
from wallestars_cloud import Invocation, handle

RUNNING: list[threading.Thread] = []  # tasks in flight (tests wait for them)


def run(event: dict[str, Any]) -> None:
    """One task, to its callback. Never raises: retries are the operator's."""
    try:
        logging.info("finished %s", asyncio.run(handle(event)))
    except Exception:
        logging.exception("task %s", event.get("idempotencyKey"))


def agent(request: Any) -> tuple[str, int, dict[str, str]]:
    """The HTTP function (a Flask request): 202 once the task runs, 400 if not an invocation."""
    try:
        event = request.get_json(force=True, silent=False)
        inv = Invocation.model_validate(event)
    except (ValueError, TypeError, ValidationError) as e:
        return f"not a Wallestars invocation: {e}", 400, {"Content-Type": "text/plain"}
    t = threading.Thread(target=run, args=(event,), name=inv.idempotencyKey)
    RUNNING.append(t)
    t.start()
    return json.dumps({"accepted": inv.idempotencyKey}), 202, {"Content-Type": "application/json"}
