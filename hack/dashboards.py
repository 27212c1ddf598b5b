"""Writes the chart's Grafana dashboards (charts/wallestars-agents/files/dashboards/).

    .venv/bin/python hack/dashboards.py          # (re)write them
    .venv/bin/python hack/dashboards.py --check  # exit 1 if the files differ (tests use it)

The panels are listed here once, as (title, unit, queries); the JSON is Grafana's
dashboard model (schemaVersion 39) with a Prometheus datasource variable. Every query
uses only metrics the operator and the webhook service export; the chart's tests
evaluate each one against a Prometheus server after a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parent.parent / "charts" / "wallestars-agents" / "files" / "dashboards"
)
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"

# (title, unit, kind, [(legend, expr)]); kind: timeseries | stat | bargauge
Panel = tuple[str, str, str, list[tuple[str, str]]]


def quantiles(metric: str, sel: str = "", by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"p{int(q * 100)}{suffix}",
         f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel}[{RI}])))")
        for q in (0.5, 0.95, 0.99)
    ]  # fmt: skip


OVERVIEW: list[Panel] = [
    ("Tasks finished per minute", "short", "stat",
     [("tasks/min", f"sum(rate(wallestars_agenttasks_total[{RI}])) * 60")]),
    ("Success rate (SLO > 95%)", "percentunit", "stat",
     [("succeeded", f'sum(rate(wallestars_agenttasks_total{{phase=~"Succeeded|PartiallySucceeded"}}[{RI}])) / sum(rate(wallestars_agenttasks_total[{RI}]))')]),
    ("Permanent failures (SLO < 1%)", "percentunit", "stat",
     [("failed after retries", f'(sum(rate(wallestars_agenttasks_total{{phase=~"Failed|TimedOut"}}[{RI}])) or vector(0)) / sum(rate(wallestars_agenttasks_total[{RI}]))')]),
    ("Agent availability (SLO > 99%)", "percentunit", "stat",
     [("available", "avg(avg_over_time(wallestars_agent_ready[$__range]))")]),
    ("Retry rate", "percentunit", "stat",
     [("attempts retried", f'(sum(rate(wallestars_agenttask_attempts_total{{outcome="Retried"}}[{RI}])) or vector(0)) / sum(rate(wallestars_agenttask_attempts_total[{RI}]))')]),
    ("Tasks waiting", "short", "stat",
     [("queued", "sum(wallestars_agenttask_queue_depth)")]),
    ("Agents ready", "short", "stat",
     [("ready", "sum(wallestars_agent_ready)"), ("agents", "count(wallestars_agent_ready)")]),
    ("Tasks finished by phase", "ops", "timeseries",
     [("{{phase}}", f"sum by (phase) (rate(wallestars_agenttasks_total[{RI}]))")]),
    ("Tasks finished by reason", "ops", "timeseries",
     [("{{reason}}", f"sum by (reason) (rate(wallestars_agenttasks_total[{RI}]))")]),
    ("Task duration (creation to end)", "s", "timeseries",
     quantiles("wallestars_agenttask_duration_seconds")),
    ("Execution time (first start to end)", "s", "timeseries",
     quantiles("wallestars_agenttask_execution_seconds")),
    ("Attempts ended by outcome", "ops", "timeseries",
     [("{{outcome}}", f"sum by (outcome) (rate(wallestars_agenttask_attempts_total[{RI}]))")]),
    ("Queue wait (creation to first dispatch)", "s", "timeseries",
     quantiles("wallestars_agenttask_queue_wait_seconds")),
    ("Queue depth per agent", "short", "timeseries",
     [("{{agent}}", "sum by (agent) (wallestars_agenttask_queue_depth)")]),
    ("Slots used per agent", "short", "timeseries",
     [("{{agent}}", "sum by (agent) (wallestars_agent_slots_used)")]),
    ("Agent readiness", "short", "bargauge",
     [("{{agent}}", "max by (agent) (wallestars_agent_ready)")]),
    ("Callbacks by verdict", "reqps", "timeseries",
     [("{{verdict}}", f"sum by (verdict) (rate(wallestars_callbacks_total[{RI}]))")]),
    ("Callback latency by status", "s", "timeseries",
     quantiles("wallestars_callback_duration_seconds", by="status")),
    ("Cloud invocations by outcome", "reqps", "timeseries",
     [("{{provider}} {{outcome}}", f"sum by (provider, outcome) (rate(wallestars_cloud_invocations_total[{RI}]))")]),
    ("Operator: created to dispatched (its own share)", "s", "timeseries",
     quantiles("wallestars_operator_seen_to_dispatched_seconds")),
    ("Operator: reconcile pass", "s", "timeseries",
     quantiles("wallestars_operator_reconcile_pass_duration_seconds")),
    ("Workflows running", "short", "stat",
     [("running", "sum(wallestars_workflows_running)")]),
    ("Workflows finished per minute by phase", "short", "timeseries",
     [("{{phase}}", f"sum by (phase) (rate(wallestars_workflows_finished_total[{RI}])) * 60")]),
    ("Workflow step start delay (dependencies ended to step created)", "s", "timeseries",
     quantiles("wallestars_workflow_step_start_delay_seconds")),
    ("Scheduled runs by kind (and skipped)", "short", "timeseries",
     [("{{event}}", f"sum by (event) (rate(wallestars_scheduled_runs_total[{RI}])) * 60")]),
    ("Notifications per minute by outcome", "short", "timeseries",
     [("{{outcome}}", f"sum by (outcome) (rate(wallestars_notifications_total[{RI}])) * 60")]),
    ("Notifications backlog (due or being sent)", "short", "timeseries",
     [("backlog", "sum(wallestars_notifications_backlog)")]),
    ("Notification delivery (transition to 2xx)", "s", "timeseries",
     quantiles("wallestars_notification_delivery_seconds")),
    ("Console: requests by route and code", "reqps", "timeseries",
     [("{{route}} {{code}}", f"sum by (route, code) (rate(wallestars_console_requests_total[{RI}]))")]),
    ("Console: answer time", "s", "timeseries",
     quantiles("wallestars_console_request_duration_seconds")),
    ("Console: live streams open, and the namespaces they watch", "short", "stat",
     [("streams", "sum(wallestars_console_streams)"), ("watches", "sum(wallestars_console_watches)")]),
]  # fmt: skip

AGENT = '{agent=~"$agent"}'
PER_AGENT: list[Panel] = [
    ("Tasks finished per minute", "short", "stat",
     [("tasks/min", f"sum(rate(wallestars_agenttasks_total{AGENT}[{RI}])) * 60")]),
    ("Success rate (SLO > 95%)", "percentunit", "stat",
     [("succeeded", f'sum(rate(wallestars_agenttasks_total{{agent=~"$agent", phase=~"Succeeded|PartiallySucceeded"}}[{RI}])) / sum(rate(wallestars_agenttasks_total{AGENT}[{RI}]))')]),
    ("Ready", "short", "stat", [("ready", f"max(wallestars_agent_ready{AGENT})")]),
    ("Availability (SLO > 99%)", "percentunit", "stat",
     [("available", f"avg(avg_over_time(wallestars_agent_ready{AGENT}[$__range]))")]),
    ("Retry rate", "percentunit", "stat",
     [("attempts retried", f'(sum(rate(wallestars_agenttask_attempts_total{{agent=~"$agent", outcome="Retried"}}[{RI}])) or vector(0)) / sum(rate(wallestars_agenttask_attempts_total{AGENT}[{RI}]))')]),
    ("Tasks finished by phase and reason", "ops", "timeseries",
     [("{{phase}} {{reason}}", f"sum by (phase, reason) (rate(wallestars_agenttasks_total{AGENT}[{RI}]))")]),
    ("Task duration by phase", "s", "timeseries",
     quantiles("wallestars_agenttask_duration_seconds", AGENT, by="phase")),
    ("Execution time by phase (first start to end)", "s", "timeseries",
     quantiles("wallestars_agenttask_execution_seconds", AGENT, by="phase")),
    ("Queue depth", "short", "timeseries",
     [("{{agent}}", f"sum by (agent) (wallestars_agenttask_queue_depth{AGENT})")]),
    ("Slots used", "short", "timeseries",
     [("{{agent}}", f"sum by (agent) (wallestars_agent_slots_used{AGENT})")]),
]  # fmt: skip


def panel(i: int, p: Panel) -> dict[str, Any]:
    title, unit, kind, queries = p
    # Stats four to a row, time series two (layout() places them).
    w, h = (6, 4) if kind == "stat" else (12, 8)
    return {
        "id": i + 1, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"x": 0, "y": 0, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
            for j, (legend, expr) in enumerate(queries)
        ],
    }  # fmt: skip


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lay panels out row by row (Grafana needs explicit grid positions)."""
    x = y = row_h = 0
    for p in panels:
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
    return panels


def dashboard(uid: str, title: str, panels: list[Panel], agent_var: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
    ]  # fmt: skip
    if agent_var:
        variables.append({
            "name": "agent", "label": "Agent", "type": "query", "datasource": DS,
            "query": {"query": "label_values(wallestars_agent_ready, agent)", "refId": "agents"},
            "definition": "label_values(wallestars_agent_ready, agent)",
            "refresh": 2, "multi": True, "includeAll": True, "current": {}, "hide": 0,
        })  # fmt: skip
    return {
        "uid": uid, "title": title, "tags": ["wallestars"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": layout([panel(i, p) for i, p in enumerate(panels)]),
    }  # fmt: skip


DASHBOARDS = {
    "overview.json": dashboard(
        "wallestars-overview", "Wallestars Agents / Overview", OVERVIEW, False
    ),
    "agent.json": dashboard("wallestars-agent", "Wallestars Agents / Agent", PER_AGENT, True),
}


def render(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if the files are not up to date")
    a = ap.parse_args()
    stale = []
    for name, d in DASHBOARDS.items():
        path = OUT / name
        text = render(d)
        if a.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run hack/dashboards.py):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
