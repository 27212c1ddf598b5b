"""The operator's Prometheus metrics (DESIGN.md §6): base units, no task names or UIDs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# wallestars_agenttasks_total and the duration histogram: wallestars_api.taskmetrics.
QUEUE_WAIT = Histogram(
    "wallestars_agenttask_queue_wait_seconds", "Creation to first dispatch.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
DISPATCH_SECONDS = Histogram(
    "wallestars_operator_dispatch_duration_seconds", "Time to dispatch one attempt (writes and invocation).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
SEEN_TO_DISPATCHED = Histogram(
    "wallestars_operator_seen_to_dispatched_seconds",
    "From the operator first seeing a task to its Dispatched write being stored (the operator's own latency).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
PASS_SECONDS = Histogram(
    "wallestars_operator_reconcile_pass_duration_seconds", "One reconcile pass over every cached task.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
QUEUE_DEPTH = Gauge("wallestars_agenttask_queue_depth", "Tasks waiting for an agent.", ["agent"])
SLOTS_USED = Gauge("wallestars_agent_slots_used", "Slots of an agent in use.", ["agent"])
READY = Gauge("wallestars_agent_ready", "1 if the agent takes tasks.", ["agent"])
CLOUD_INVOCATIONS = Counter(
    "wallestars_cloud_invocations_total", "Cloud agent invocations.", ["provider", "outcome"]
)
API_CALLS = Gauge(
    "wallestars_operator_api_requests", "Requests the operator has sent to the API server."
)
EVENTS_DROPPED = Counter(
    "wallestars_operator_events_dropped", "Events not sent because the Event queue was full."
)
RETRY_AFTER_WAIT = Gauge(
    "wallestars_operator_retry_after_wait_seconds",
    "Seconds the API server's Retry-After added to the backoff of refused writes, summed.",
)
RATE_LIMIT_WAIT = Gauge(
    "wallestars_operator_rate_limit_wait_seconds",
    "Total time API calls waited for the client-side rate limit.",
)


def queue_depth(
    queued: Mapping[tuple[str, str], int], agents: Mapping[tuple[str, str], Any]
) -> None:
    for k in agents:
        QUEUE_DEPTH.labels(k[1]).set(queued.get(k, 0))


def agent(key: tuple[str, str], used: int, ready: bool) -> None:
    SLOTS_USED.labels(key[1]).set(used)
    READY.labels(key[1]).set(1 if ready else 0)


# AgentWorkflows (workflows/controller.py).
WORKFLOW_STEPS = Counter(
    "wallestars_workflow_steps", "Step AgentTasks the operator created for workflows.", ["event"]
)
WORKFLOWS_FINISHED = Counter(
    "wallestars_workflows_finished", "AgentWorkflows that ended, by phase.", ["phase"]
)
WORKFLOWS_RUNNING = Gauge("wallestars_workflows_running", "AgentWorkflows not yet finished.")
STEP_START_DELAY = Histogram(
    "wallestars_workflow_step_start_delay_seconds",
    "From a step's last dependency ending (or its workflow starting) to its AgentTask stored.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
SCHEDULED_RUNS = Counter(
    "wallestars_scheduled_runs", "Runs AgentSchedules created (by kind) or skipped.", ["event"]
)
NOTIFICATIONS = Counter(
    "wallestars_notifications_total",
    "Notification POSTs, by outcome (delivered, retrying, gave_up, refused).",
    ["outcome"],
)
NOTIFY_BACKLOG = Gauge(
    "wallestars_notifications_backlog", "Notifications due or being sent (all receivers)."
)
NOTIFY_DELAY = Histogram(
    "wallestars_notification_delivery_seconds", "From a transition to its notification's delivery.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)  # fmt: skip
