"""AWS Lambda handler for Wallestars cloud agents (Python 3.11+ runtime).

Deploy with template.yaml (AWS SAM); package with package.sh. The operator invokes the
function asynchronously (InvocationType=Event) with the attempt's invocation as the
event; the function runs the task and calls back to the webhook service. Add your own
task types in my_tasks.py (or any module imported here) with ``@task("name")``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import my_tasks  # type: ignore[import-not-found]  # noqa: F401  (registers your task types)
from wallestars_cloud import handle

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    """Lambda's entry point. Errors are reported through the callback, not raised: a
    raised error would make Lambda retry the event, and retries belong to the operator."""
    return {"outcome": asyncio.run(handle(event))}
