"""Every command the README and docs/ print in a shell code block still works as written.

Each documented line is matched to one way of checking it (``CHECKS``); a line that no
check claims fails the test, so a new command cannot be documented without deciding how
it is kept working. Benchmarks run in a smoke mode (their own flags, repeated after the
documented ones: argparse keeps the last value), make targets are resolved by
``make -n``; lines that need a running cluster name the test that runs them (the
README's block for the demo's cluster is run by test_demo.py against that cluster), and
the few that need a cloud account say so.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "charts" / "wallestars-agents" / "README.md"]  # fmt: skip


@dataclass(frozen=True)
class Check:
    how: str  # smoke | make | covered | elsewhere
    extra: str = ""  # smoke: the arguments that make a run short
    why: str = ""  # covered / elsewhere: which test runs it, or why it cannot run here


# (pattern of a documented command, how it is checked). First match wins.
CHECKS: list[tuple[str, Check]] = [
    (r"\.venv/bin/python bench/cluster_startup\.py", Check("smoke", "--runs 1")),
    (r"\.venv/bin/python bench/notifications\.py", Check("smoke", "--rate 10 --seconds 2")),
    (
        r"\.venv/bin/python bench/console_api\.py",
        Check("smoke", "--tasks 120 --runs 2 --clients 3 --rate 5 --seconds 2"),
    ),
    (
        r"\.venv/bin/python bench/workflows\.py",
        Check("smoke", "--chain 3 --width 5 --schedules 2 --minutes 1"),
    ),
    (
        r"\.venv/bin/python bench/callbacks\.py --overload",
        Check("smoke", "--rate 20 --seconds 3 --tasks 10 --finals 10"),
    ),
    (
        r"\.venv/bin/python bench/callbacks\.py",
        Check("smoke", "--rate 20 --seconds 2 --runs 1 --tasks 20 --forged-seconds 1"),
    ),
    (
        r"\.venv/bin/python bench/operator_http\.py --phases ceiling",
        Check("smoke", "--raw-tasks 30 --tasks 30"),
    ),
    (
        r"\.venv/bin/python bench/operator_http\.py --phases flood",
        Check("smoke", "--rate 4 --seconds 3 --flood-pods 50 --flood-in-flight 2"),
    ),
    (
        r"\.venv/bin/python bench/operator_http\.py --phases expiry",
        Check("smoke", "--expire-tasks 30 --expiry-lead 15 --rate 5 --seconds 12"),
    ),
    (
        r"\.venv/bin/python bench/operator_http\.py",
        Check("smoke", "--phases writes,throughput --tasks 40 --audit-tasks 5"),
    ),
    (
        r"\.venv/bin/python bench/operator_jobs\.py",
        Check("smoke", "--phases writes --audit-tasks 3"),
    ),
    (
        r"\.venv/bin/python bench/browser_pods\.py",
        Check(
            "smoke", "--phases coldwarm,latency --warm-tasks 1 --latency-tasks 2 --latency-rate 2"
        ),
    ),
    (
        r"\.venv/bin/python bench/soak\.py",
        Check("covered", why="test_soak.py runs its soak at 500+50 tasks with the same assertions"),
    ),
    (r"\.venv/bin/python bench/browser_tasks\.py", Check("smoke", "--runs 1 --types screenshot")),
    (r"\.venv/bin/python bench/status_patch_cel\.py", Check("smoke", "--rounds 1 --patches 50")),
    (r"make (demo|test|up|down|unit|integration)\b", Check("make")),
    (
        r"(export KUBECONFIG=|kubectl get wallestars|helm -n wallestars-system status)",
        Check("covered", why="test_demo.py runs it against the demo's cluster"),
    ),
    (
        r"kubectl (get nodes|create job hello|logs job/hello)",
        Check(
            "covered",
            why="test_node_standin.py runs a Job and reads its logs through the API server",
        ),
    ),
    (
        r"(helm (install|upgrade|test) wallestars|kubectl (label namespace|apply --server-side))",
        Check("covered", why="test_chart.py installs, tests and upgrades the chart (helmlocal)"),
    ),
    (
        r"(curl -H \"Authorization: Bearer|http://wallestars-webhooks)",
        Check("covered", why="artifact download by token: test_demo.py and test_chart.py"),
    ),
    (
        r"(agent_images/aws_lambda/package\.sh)",
        Check("covered", why="test_cloud_templates.py builds the zip and imports its handler"),
    ),
    (
        r"hack/localcluster\.py up --real-node",
        Check(
            "covered", why="test_real_node.py starts the same node (localcluster.up with real_node)"
        ),
    ),
    (
        r"^(docker build|kind load)",
        Check(
            "elsewhere",
            why="needs a Docker engine and kind, which these machines lack; "
            "the same Dockerfiles are built with buildah for the real node (test_chart.py)",
        ),
    ),
    (
        r"^(crictl |python3? hack/realnode/images\.py|\.venv/bin/python hack/realnode/images\.py)",
        Check(
            "covered",
            why="test_real_node.py runs crictl on the node; hack/setup.sh builds the images",
        ),
    ),
    (
        r"(sam deploy|--stack-name|kubectl (create|label) secret (generic )?wallestars-fn-key)",
        Check("elsewhere", why="needs an AWS or Azure account; no cloud is reachable here"),
    ),
    (
        r"^gcloud ",
        Check("elsewhere", why="needs a Google Cloud account; no cloud is reachable here"),
    ),
    (
        r"^cp -r agent_images/wallestars_sdk agent_images/wallestars_cloud agent_images/gcp_functions/",
        Check(
            "covered",
            why="test_gcp_functions.py runs main.py with those packages importable, "
            "as the copy makes them",
        ),
    ),
]


def documented() -> list[tuple[str, str]]:
    """(file, command) for every command line of every ``sh`` code block."""
    out = []
    for path in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
            joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
            for line in joined.splitlines():
                cmd = re.sub(r"\s+#.*$", "", line).strip()
                if cmd and not cmd.startswith("#"):
                    out.append((str(path.relative_to(REPO)), cmd))
    return out


def check_of(cmd: str) -> Check | None:
    return next((c for pattern, c in CHECKS if re.search(pattern, cmd)), None)


def test_every_documented_command_has_a_check() -> None:
    unclaimed = [(f, c) for f, c in documented() if check_of(c) is None]
    assert not unclaimed, f"documented commands nobody checks (add them to CHECKS): {unclaimed}"
    for _, check in CHECKS:  # a command said to be covered names a test that exists
        for test in re.findall(r"test_\w+\.py", check.why):
            assert (REPO / "tests" / "integration" / test).exists(), test
    assert any(check_of(c) and check_of(c).how == "smoke" for _, c in documented())  # type: ignore[union-attr]


def run(cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # The environment a new user has: no PYTHONPATH of ours (pytest's is not inherited).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


RUNNABLE = [(f, c) for f, c in documented() if (k := check_of(c)) and k.how in ("smoke", "make")]


@pytest.mark.parametrize(("doc", "cmd"), RUNNABLE, ids=[c.split("#")[0][:60] for _, c in RUNNABLE])
def test_documented_command_runs(doc: str, cmd: str) -> None:
    check = check_of(cmd)
    assert check is not None
    if check.how == "make":
        target = re.search(r"make (\S+)", cmd)
        assert target
        out = run(f"make -n {target[1]}", 60)
    else:
        out = run(f"{cmd} {check.extra}", 600)
    assert out.returncode == 0, (
        f"{doc}: `{cmd}` failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    )


def test_demo_commands_are_the_ones_test_demo_runs() -> None:
    """The README block test_demo.py runs after the demo is the README's own (no copy)."""
    from tests.integration.test_demo import readme_cluster_commands

    cmds = readme_cluster_commands()
    assert any(c.startswith("kubectl get wallestars") for c in cmds), cmds
    assert any(c.startswith("helm -n wallestars-system status") for c in cmds), cmds
    assert Path(REPO / "README.md").read_text().count("kubectl get wallestars -A") >= 1
