"""Prometheus metrics of the webhook service (DESIGN.md §6): base units, no task labels."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLBACKS = Counter("wallestars_callbacks_total", "Callbacks received, by verdict.", ["verdict"])
CALLBACK_SECONDS = Histogram(
    "wallestars_callback_duration_seconds",
    "Time to answer a callback, Kubernetes API calls included, by the callback's status "
    "(running, success, failure, partial; none when refused before its body was read).",
    ["status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_SECONDS = Histogram(
    "wallestars_webhook_api_request_duration_seconds",
    "Kubernetes API calls made by the webhook service, by operation.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PATCH_CONFLICTS = Counter(
    "wallestars_webhook_patch_conflicts_total",
    "Status patches refused for a stale resourceVersion (then retried).",
)
COALESCED = Counter(
    "wallestars_webhook_progress_coalesced_total",
    "Progress reports stored in a write shared with an earlier one (no write of their own).",
)
ARTIFACTS = Counter("wallestars_artifacts_total", "Artifact requests, by verdict.", ["verdict"])
ARTIFACT_BYTES = Counter("wallestars_artifact_bytes_total", "Bytes of artifacts stored.")
EVENTS_DROPPED = Counter(
    "wallestars_webhook_events_dropped", "Events not sent because the Event queue was full."
)
