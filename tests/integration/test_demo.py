"""The README's main job (`make demo` runs hack/demo.py) succeeds, as a newcomer runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import localcluster
import pytest
from harness import REPO


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (hack/setup.sh)"
)
def test_demo_runs_three_browser_tasks_to_succeeded(tmp_path: Path) -> None:
    state = tmp_path / "demo-cluster"
    env = {**os.environ, "WALLESTARS_DEMO_DIR": str(state),
           "PYTHONPATH": f"{REPO / 'hack'}:{REPO}"}  # fmt: skip
    try:
        out = subprocess.run([sys.executable, str(REPO / "hack" / "demo.py")], env=env,
                             capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    finally:
        localcluster.down(state)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    phases = {r[0]: r[1] for r in rows if r and r[0] in
              ("homepage-screenshot", "list-scrape", "signup-accessibility")}  # fmt: skip
    assert phases == dict.fromkeys(
        ("homepage-screenshot", "list-scrape", "signup-accessibility"), "Succeeded"
    )
    assert '"items":["Item 1"' in out.stdout and '"name":"screenshot.png"' in out.stdout
