"""The reconcile loop's Agent side: health probes (cloud functions probed in-process,
browser Agents by a probe Job, probes.py) and each Agent's status (conditions, load,
statistics, heartbeat). Decisions are in agents.py and probes.py; this carries them out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from wallestars_api.events import EventQueue
from wallestars_api.lifecycle import TERMINAL, phase_of

from wallestars_operator import metrics, probes
from wallestars_operator.agents import agent_conditions, agent_problem, heartbeat, statistics
from wallestars_operator.cloud import Cloud
from wallestars_operator.kube import Kube
from wallestars_operator.manifests import AttemptConfig
from wallestars_operator.state import State

log = logging.getLogger("wallestars.operator")
Key = tuple[str, str]


class AgentUpkeep:
    """Mixed into the Reconciler, whose state, writers and caches it uses."""

    state: State
    kube: Kube
    cfg: AttemptConfig
    cloud: Cloud
    events: EventQueue
    busy: dict[Key, asyncio.Task[None]]
    agent_written: dict[Key, tuple[Any, float]]
    probe_verdicts: dict[Key, dict[str, Any]]

    # The Reconciler's: whether a write for a key may start, and starting one.
    free: Callable[[Key, float], bool]
    spawn: Callable[[Key, Callable[[], Awaitable[None]]], None]

    def probe_of(self, k: Key, agent: Mapping[str, Any]) -> dict[str, Any] | None:
        """A browser Agent's latest probe verdict: ours until the watched status has it."""
        watched: dict[str, Any] | None = (agent.get("status") or {}).get("probe")
        ours = self.probe_verdicts.get(k)
        if ours is None:
            return watched
        if watched and int(watched.get("number") or 0) >= int(ours.get("number") or 0):
            del self.probe_verdicts[k]  # written and seen: the status is its home now
            return watched
        return ours

    def sick(self, k: Key, agent: Mapping[str, Any]) -> tuple[str, str] | None:
        """(reason, message) of what the last probe found wrong, or None."""
        if (agent.get("spec") or {}).get("type") == "browser":
            return probes.sickness(agent, self.probe_of(k, agent))
        return self.cloud.health.get(k, (None, 0.0))[0]

    def problem(self, k: Key, agent: Mapping[str, Any]) -> str | None:
        """Why an Agent cannot take tasks now: its configuration, or its last probe."""
        sick = self.sick(k, agent)
        return agent_problem(agent, self.cfg.allow_plain_http) or (sick[1] if sick else None)

    def probe_health(self, agents: Mapping[Key, Mapping[str, Any]], mono: float) -> None:
        """Start a probe of each cloud Agent not probed for HEALTH_SECONDS."""
        for k, a in agents.items():
            if (a.get("spec") or {}).get("type") != "cloud":
                continue
            if agent_problem(a, self.cfg.allow_plain_http) is not None:
                continue
            key = (f"agent-health/{k[0]}", k[1])
            if key not in self.busy and self.cloud.due(k, mono):
                self.spawn(key, functools.partial(self.cloud.probe, k, a))

    def probe_browsers(
        self, agents: Mapping[Key, Mapping[str, Any]], now: datetime, mono: float
    ) -> None:
        """Each browser Agent's next probe step (probes.decide): start a probe Job, or
        read a finished one's verdict (its pod once, for the termination message)."""
        jobs: dict[Key, list[Mapping[str, Any]]] = {}
        for (ns, _), j in self.state.jobs.items():
            owner = (j["metadata"].get("labels") or {}).get(probes.PROBE_LABEL)
            if owner:
                jobs.setdefault((ns, owner), []).append(j)
        for k, a in agents.items():
            if (a.get("spec") or {}).get("type") != "browser":
                continue
            if agent_problem(a, self.cfg.allow_plain_http) is not None:
                continue
            key = (f"agent-probe/{k[0]}", k[1])
            if not self.free(key, mono):
                continue
            probe = self.probe_of(k, a)
            view = {**a, "status": {**(a.get("status") or {}), "probe": probe or {}}}
            match probes.decide(view, jobs.get(k, []), now):
                case probes.Start(n=n):
                    job = probes.probe_job(a, n, self.cfg)
                    log.info("%s/%s: health probe %s", *k, job["metadata"]["name"])
                    self.spawn(key, functools.partial(self._create_probe, job))
                case probes.Record(job=job):
                    pod_key = (k[0], job["metadata"]["name"])
                    if pod_key in self.state.pods:
                        self.record_probe(k, a, probes.verdict(job, self.state.pods[pod_key], now))
                    else:
                        self.spawn(key, functools.partial(self._read_pod, *pod_key))

    async def _create_probe(self, job: Mapping[str, Any]) -> None:
        await self.kube.create_job(job)  # False: made already (a deterministic name)

    async def _read_pod(self, ns: str, job: str) -> None:
        pod = await self.kube.job_pod(ns, job)
        if pod is None:  # gone already: the Job's own conditions say what there is to say
            pod = {"metadata": {"name": job, "namespace": ns, "uid": "",
                                "labels": {"job-name": job}}, "status": {}}  # fmt: skip
        self.state.put("pods", pod)

    def record_probe(self, k: Key, agent: Mapping[str, Any], v: dict[str, Any]) -> None:
        before = self.probe_of(k, agent) or {}
        self.probe_verdicts[k] = v
        self.state.pods.pop((k[0], v["job"]), None)
        if before.get("healthy") != v["healthy"] or before.get("reason") != v["reason"]:
            reason = "ProbePassed" if v["healthy"] else v["reason"]
            self.events.post(agent, reason, v["message"], not v["healthy"])
        self.state.wake.set()

    def agent_status(self, agents: Mapping[Key, Mapping[str, Any]], load: Mapping[Key, int],
                     queued: Mapping[Key, int], now: datetime) -> None:  # fmt: skip
        mono = time.monotonic()
        for gone in [k for k in self.agent_written if k not in agents]:  # deleted Agents
            del self.agent_written[gone]
            self.cloud.health.pop(gone, None)
            self.probe_verdicts.pop(gone, None)
        due = []
        for k, a in agents.items():
            if not self.free((f"agent-status/{k[0]}", k[1]), mono):
                continue
            last = self.agent_written.get(k)
            probe = self.probe_of(k, a)
            cheap = (
                load.get(k, 0),
                queued.get(k, 0),
                agent_problem(a, self.cfg.allow_plain_http),
                bool((a.get("spec") or {}).get("paused")),
                self.sick(k, a),
                (probe or {}).get("job"),
            )
            # Write on change, at most every 2 s per agent, and a refresh every 60 s.
            if (
                last is not None
                and (last[0] == cheap or mono - last[1] < 2)
                and mono - last[1] < 60
            ):
                continue
            due.append((k, a, cheap, probe))
        if not due:
            return
        # The statistics read every finished task: only when some agent's status is written.
        finished: dict[Key, list[Mapping[str, Any]]] = {}
        running: dict[Key, list[Mapping[str, Any]]] = {}
        for o in self.state.tasks.values():
            st = o.get("status") or {}
            if st.get("agent"):
                into = finished if phase_of(o) in TERMINAL else running
                into.setdefault((o["metadata"]["namespace"], st["agent"]), []).append(st)
        for k, a, cheap, probe in due:
            active, waiting, problem, paused, sick, _ = cheap
            t = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            conds, takes = agent_conditions(
                (a.get("status") or {}).get("conditions") or [], problem, paused, sick, t
            )
            status: dict[str, Any] = {
                "activeTasks": active,
                "queuedTasks": waiting,
                "conditions": conds,
                **statistics(finished.get(k, [])),
            }
            beat = heartbeat(finished.get(k, []), running.get(k, []), probe)
            if beat:
                status["lastHeartbeatTime"] = beat
            if probe:
                status["probe"] = probe
            metrics.agent(k, active, takes)
            self.spawn(
                (f"agent-status/{k[0]}", k[1]),
                functools.partial(self._write_agent, k, status, cheap),
            )

    async def _write_agent(self, k: Key, status: Mapping[str, Any], cheap: Any) -> None:
        await self.kube.patch_agent_status(k[0], k[1], status)
        self.agent_written[k] = (cheap, time.monotonic())
