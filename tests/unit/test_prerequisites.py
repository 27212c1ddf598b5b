"""A missing prerequisite skips a test on a developer's machine but fails it under CI
(tests/conftest.py, ``@pytest.mark.requires``): a broken CI set-up can never pass as a
run of skips (issue #13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import REPO

NEEDS_CHROMIUM = """
import pytest

@pytest.mark.requires("chromium")
def test_needs_a_browser():
    pass
"""


def run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(NEEDS_CHROMIUM)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # no chromium to be found
    env["PYTHONPATH"] = f"{REPO}:{REPO / 'hack'}"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_probe.py")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_missing_chromium_is_a_skip_on_a_developers_machine(tmp_path: Path) -> None:
    out = run(tmp_path, ci=False)
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout + out.stderr


def test_missing_chromium_fails_the_run_under_ci(tmp_path: Path) -> None:
    out = run(tmp_path, ci=True)
    # pytest counts a failure in set-up as an error: either way the run exits 1.
    assert out.returncode == 1 and "1 error" in out.stdout, out.stdout + out.stderr
    assert "prerequisite missing under CI: chromium" in out.stdout
