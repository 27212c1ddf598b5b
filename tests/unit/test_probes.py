"""Browser Agents' health probes and what an Agent's status says, decided without the API."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import REPO
from wallestars_api.lifecycle import SUCCESS_PHASES
from wallestars_operator import probes
from wallestars_operator.agents import heartbeat, statistics
from wallestars_operator.manifests import AttemptConfig

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CFG = AttemptConfig(callback_base="http://hooks:8080", deny_cidrs=("10.96.0.0/12",))


def agent(
    generation: int = 1, probe: dict[str, Any] | None = None, **browser: Any
) -> dict[str, Any]:
    return {"metadata": {"name": "chrome", "namespace": "team", "uid": "u-1", "generation": generation},
            "spec": {"type": "browser", "browser": {"browser": "firefox", **browser}},
            "status": {"probe": probe} if probe else {}}  # fmt: skip


def finished_job(a: dict[str, Any], n: int, ok: bool = True) -> dict[str, Any]:
    job = probes.probe_job(a, n, CFG)
    job["status"] = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                     "reason": "" if ok else "DeadlineExceeded",
                                     "message": "" if ok else "Job was active longer than specified deadline"}]}  # fmt: skip
    return job


def test_a_probe_job_is_the_agents_image_under_the_same_confinement_without_a_key() -> None:
    a = agent(image="reg/browser:1", viewport={"width": 1000, "height": 700})
    job = probes.probe_job(a, 3, CFG)
    assert job["metadata"]["name"] == probes.probe_name("chrome", "u-1", 3)
    assert job["metadata"]["labels"][probes.PROBE_LABEL] == "chrome"
    # The same NetworkPolicy as the Agent's task pods selects it.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "browser-agent"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Agent"  # deleted with it
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"] == "reg/browser:1" and c["args"] == ["--self-test"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    assert "key" not in {v["name"] for v in pod["volumes"]}  # no callback key: nothing to sign
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["WALLESTARS_BROWSER"] == "firefox" and env["WALLESTARS_DENY_CIDRS"] == "10.96.0.0/12"
    assert job["spec"]["activeDeadlineSeconds"] == 120 and job["spec"]["backoffLimit"] == 0
    assert len(probes.probe_name("x" * 253, "u", 12345)) <= 63


def test_probes_run_on_creation_on_a_change_and_on_the_interval() -> None:
    a = agent()
    assert probes.decide(a, [], NOW) == probes.Start(1)  # created: never probed
    running = probes.probe_job(a, 1, CFG)
    assert probes.decide(a, [running], NOW) is None  # one at a time
    done = finished_job(a, 1)
    assert probes.decide(a, [done], NOW) == probes.Record(done)
    v = probes.verdict(done, None, NOW)
    recorded = agent(probe=v)
    assert probes.decide(recorded, [done], NOW) is None  # recorded, not due
    assert probes.decide(recorded, [done], NOW + timedelta(seconds=599)) is None
    assert probes.decide(recorded, [done], NOW + timedelta(seconds=600)) == probes.Start(2)
    changed = agent(generation=2, probe=v)  # e.g. concurrency changed: probed again
    assert probes.decide(changed, [done], NOW) == probes.Start(2)
    off = agent(probe=v, healthProbe={"intervalSeconds": 0})
    off["status"]["probe"]["fingerprint"] = probes.fingerprint(off["spec"]["browser"])
    assert probes.decide(off, [], NOW + timedelta(days=30)) is None
    # A Job of an earlier Agent of the same name (another uid) is not this Agent's.
    other = finished_job(agent(), 1)
    other["metadata"]["ownerReferences"][0]["uid"] = "u-0"
    assert probes.decide(a, [other], NOW) == probes.Start(1)


def test_an_agent_with_its_own_command_is_probed_only_if_it_asks() -> None:
    assert probes.decide(agent(command=["my-agent"]), [], NOW) is None
    assert probes.decide(agent(command=["my-agent"], healthProbe={"enabled": True}), [], NOW) == (
        probes.Start(1)
    )
    assert probes.decide(agent(healthProbe={"enabled": False}), [], NOW) is None


def test_the_verdict_is_the_self_tests_own_or_why_the_job_failed() -> None:
    a = agent()
    said = {"healthy": False, "engine": "webkit", "reason": "BrowserUnavailable",
            "message": "this image has no webkit: WebKit needs Playwright's own build"}  # fmt: skip
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 1, "message": json.dumps(said)}}}]}}  # fmt: skip
    v = probes.verdict(finished_job(a, 1, ok=False), pod, NOW)
    assert (v["healthy"], v["reason"]) == (False, "BrowserUnavailable")
    assert "no webkit" in v["message"] and v["number"] == 1
    assert v["fingerprint"] == probes.fingerprint(a["spec"]["browser"])
    # No verdict of its own (the image never started): the Job's reason.
    v = probes.verdict(finished_job(a, 2, ok=False), {"status": {}}, NOW)
    assert (v["healthy"], v["reason"]) == (False, "ProbeFailed")
    assert "active longer than specified deadline" in v["message"]
    # Logs instead of a JSON line (FallbackToLogsOnError): the last line says why.
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 1, "message": "Traceback...\nModuleNotFoundError: No module named 'x'"}}}]}}  # fmt: skip
    v = probes.verdict(finished_job(a, 3, ok=False), pod, NOW)
    assert "No module named 'x'" in v["message"]
    ok = probes.verdict(finished_job(a, 4), None, NOW)
    assert ok["healthy"] is True and ok["completionTime"] == "2026-12-03T12:00:00Z"


def test_ready_waits_for_a_passed_probe_of_the_current_browser_configuration() -> None:
    a = agent()
    assert probes.sickness(a, None) == (
        "Probing", "waiting for the health probe of this browser configuration")  # fmt: skip
    passed = probes.verdict(finished_job(a, 1), None, NOW)
    assert probes.sickness(a, passed) is None
    # A changed browser section (another image) is not vouched for by the old verdict.
    assert probes.sickness(agent(image="reg/other:2"), passed) is not None
    # Only the browser section counts: concurrency or capabilities do not.
    more = agent(generation=5)
    more["spec"]["concurrency"] = 9
    assert probes.sickness(more, passed) is None
    failed = {**passed, "healthy": False, "reason": "BrowserUnavailable", "message": "no webkit"}
    assert probes.sickness(a, failed) == ("BrowserUnavailable", "no webkit")
    assert probes.sickness({"spec": {"type": "cloud"}}, None) is None


def test_heartbeat_is_the_last_thing_that_really_ran() -> None:
    finished = [
        {"completionTime": "2026-12-03T10:00:00Z"},
        {"completionTime": "2026-12-03T11:00:00Z"},
    ]
    running = [{"startTime": "2026-12-03T11:30:00Z",
                "callbacks": [{"time": "2026-12-03T11:31:00Z"}, {"time": "2026-12-03T11:45:00Z"}]}]  # fmt: skip
    probe = {"completionTime": "2026-12-03T11:40:00Z"}
    assert heartbeat(finished, [], None) == "2026-12-03T11:00:00Z"
    assert heartbeat(finished, running, probe) == "2026-12-03T11:45:00Z"
    assert heartbeat([], [], probe) == "2026-12-03T11:40:00Z"
    assert heartbeat([], [{"phase": "Dispatched"}], None) is None  # nothing ran yet


@pytest.mark.parametrize("n", [1, 100, 150])
def test_success_rate_and_mean_duration_over_the_newest_hundred(n: int) -> None:
    # Every third task fails; durations 0..n-1 s; completion order = index order.
    done: list[dict[str, Any]] = [{"phase": "Failed" if i % 3 == 0 else ("PartiallySucceeded" if i % 3 == 1 else "Succeeded"),
             "completionTime": (NOW + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "durationSeconds": float(i)} for i in range(n)]  # fmt: skip
    newest = done[-100:]
    got = statistics(list(reversed(done)))  # order of the cache does not matter
    ok = sum(1 for d in newest if d["phase"] != "Failed")
    assert got["successRate"] == round(ok / len(newest), 3)
    assert got["meanDurationSeconds"] == round(
        sum(float(d["durationSeconds"]) for d in newest) / len(newest), 3
    )


def test_dashboards_count_success_as_agent_status_does() -> None:
    """PartiallySucceeded is a success in both places: the same phase set."""
    want = set(SUCCESS_PHASES)
    for name in ("agent.json", "overview.json"):
        text = (REPO / "charts/wallestars-agents/files/dashboards" / name).read_text()
        found = re.findall(r'phase=~\\"([A-Za-z|]+)\\"', text)
        assert found, name
        for alternatives in found:
            if "Succeeded" in alternatives and "Failed" not in alternatives:
                assert set(alternatives.split("|")) == want, (name, alternatives)
