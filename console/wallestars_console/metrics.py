"""The console's Prometheus metrics (base units; routes by pattern, never a name or UID)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "wallestars_console_requests_total", "Requests to the console and its API.", ["route", "code"]
)
REQUEST_SECONDS = Histogram(
    "wallestars_console_request_duration_seconds", "Time to answer (to the first byte of a stream).",
    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
STREAMS = Gauge("wallestars_console_streams", "Live event streams open (SSE and WebSocket).")
FEEDS = Gauge(
    "wallestars_console_watches",
    "Namespaces the console watches for its streams (each one watch of tasks, one of agents).",
)
ENDED = Counter(
    "wallestars_console_streams_ended_total",
    "Streams the console ended: rights gone (Forbidden, Unauthorized) or a client too slow (TooSlow).",
    ["reason"],
)
