"""The browser task types: one module each, ``run(Run, payload) -> Outcome``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import accessibility, e2e, performance, scrape, screenshot
from .common import Evidence, Outcome, Run, TaskError

TaskFn = Callable[[Run, Any], Awaitable[Outcome]]

TASKS: dict[str, TaskFn] = {
    "screenshot": screenshot.run,
    "scrape": scrape.run,
    "e2e-test": e2e.run,
    "performance": performance.run,
    "accessibility": accessibility.run,
}

__all__ = ["TASKS", "Evidence", "Outcome", "Run", "TaskError"]
