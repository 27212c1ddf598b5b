"""The README's main job (`make demo` runs hack/demo.py) succeeds, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import localcluster
from harness import REPO


def readme_cluster_commands() -> list[str]:
    """The README's commands for the cluster the demo leaves running, as printed there
    (the block that exports KUBECONFIG), less the export and ``make down``."""
    block = next(b for b in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
                 if "export KUBECONFIG" in b)  # fmt: skip
    cmds = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [c for c in cmds if c and not c.startswith(("export ", "make "))]


def console_answer(stdout: str) -> int | str:
    """The console the demo printed, asked for the demo's tasks with the token it printed."""
    console = re.search(r"The console and its API are at (http://[0-9.]+)/", stdout)
    token = re.search(r"^CONSOLE_TOKEN=(\S+)$", stdout, re.M)
    if not (console and token):
        return "no console address or token printed"
    req = urllib.request.Request(f"{console[1]}/api/v1/namespaces/demo/tasks",  # noqa: S310 (the demo's Service)
                                 headers={"Authorization": f"Bearer {token[1]}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310
            names = [t["name"] for t in json.loads(r.read())["items"]]
            return int(r.status) if "homepage-screenshot" in names else f"tasks seen: {names}"
    except (OSError, ValueError) as e:
        return repr(e)


def test_demo_runs_three_browser_tasks_then_the_hybrid_deploy_check_twice(tmp_path: Path) -> None:
    state = tmp_path / "demo-cluster"
    env = {**os.environ, "WALLESTARS_DEMO_DIR": str(state),
           "PYTHONPATH": f"{REPO / 'hack'}:{REPO}"}  # fmt: skip
    try:
        out = subprocess.run([sys.executable, str(REPO / "hack" / "demo.py")], env=env,
                             capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
        # Then what the README tells the user to try on the cluster the demo leaves up.
        user = {**os.environ, "KUBECONFIG": str(state / "admin.kubeconfig"),
                "PATH": f"{localcluster.bin_dirs()['helm']}:{os.environ['PATH']}"}  # fmt: skip
        tried = {c: subprocess.run(["bash", "-c", c], env=user, capture_output=True, text=True,
                                   timeout=60, check=False) for c in readme_cluster_commands()}  # fmt: skip
        console_tasks_seen = console_answer(out.stdout)
    finally:
        localcluster.down(state)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for c, r in tried.items():
        assert r.returncode == 0, f"README: `{c}` failed on the demo's cluster: {r.stderr}"
    assert "Succeeded" in tried["kubectl get wallestars -A"].stdout
    rows = [line.split() for line in out.stdout.splitlines()]
    phases = {r[0]: r[1] for r in rows if r and r[0] in
              ("homepage-screenshot", "list-scrape", "signup-accessibility")}  # fmt: skip
    assert phases == dict.fromkeys(
        ("homepage-screenshot", "list-scrape", "signup-accessibility"), "Succeeded"
    )
    assert '"items":["Item 1"' in out.stdout and '"name":"screenshot.png"' in out.stdout
    # On the real node: the runtime shown, the release's 2+2+1 pods and each task's pod
    # (a container of the browser image) completed.
    assert "containerd://" in out.stdout
    running = [r for r in rows if r and r[0].startswith("wallestars-") and "Running" in r]
    assert len(running) == 5, out.stdout  # 2 operators, 2 webhook services, the console
    completed = [r for r in rows if r and r[0].startswith(tuple(phases)) and "Completed" in r]
    assert len(completed) == 3, out.stdout
    # It ends with the hybrid example, twice: no baseline the first time, then the visual
    # regression against the first run's screenshot passes.
    assert "the first run Succeeded" in out.stdout and "the second run Succeeded" in out.stdout
    assert "visual regression: Skipped (when was false" in out.stdout
    visual = [line for line in out.stdout.splitlines() if "visual regression" in line]
    # The console's address and a token that works there, as the person it names.
    assert console_tasks_seen == 200, console_tasks_seen
    compared = [json.loads(v.split(": ", 1)[1]) for v in visual if "against" in v]
    assert len(compared) == 1 and compared[0]["diffRatio"] == 0 and compared[0]["passed"], visual
