"""The browser task types: one module each, ``run(Run, payload) -> Outcome``.

Modules are imported on first use, so an attempt loads only its own type's libraries
(axe-core for accessibility, numpy/scipy under imagehash for screenshots).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from .common import Evidence, Outcome, Run, TaskError

TaskFn = Callable[[Run, Any], Awaitable[Outcome]]

MODULES = {
    "screenshot": "screenshot",
    "scrape": "scrape",
    "e2e-test": "e2e",
    "performance": "performance",
    "accessibility": "accessibility",
}


def task(task_type: str) -> TaskFn:
    fn: TaskFn = importlib.import_module(f".{MODULES[task_type]}", __name__).run
    return fn


__all__ = ["MODULES", "Evidence", "Outcome", "Run", "TaskError", "task"]
