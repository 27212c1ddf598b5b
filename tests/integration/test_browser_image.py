"""The browser agent image: its Dockerfile agrees with what the operator and the tests
use, and its entrypoint's health self-test passes as a local process (no Docker engine
here to build the image itself)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import localcluster
import pytest
from harness import REPO
from wallestars_operator.config import Settings
from wallestars_operator.manifests import AGENT_UID, DEFAULT_BROWSER_IMAGE, DEFAULT_COMMAND

DOCKERFILE = (REPO / "agent_images" / "Dockerfile.browser").read_text()


def test_dockerfile_pins_what_the_project_pins() -> None:
    playwright = re.search(r'"playwright==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert (
        playwright
        and f"ARG BROWSER_BASE=mcr.microsoft.com/playwright/python:v{playwright[1]}-" in DOCKERFILE
    )
    gomod = (REPO / "hack" / "gobuild" / "smokescreen" / "go.mod").read_text()
    assert "COPY hack/gobuild/smokescreen/ ./" in DOCKERFILE and "-mod=readonly" in DOCKERFILE
    assert re.search(r"require github.com/stripe/smokescreen v[\d.]+", gomod)


def test_entrypoint_user_and_default_image_agree_with_the_operator() -> None:
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, re.M)
    assert entry and eval(entry[1]) == DEFAULT_COMMAND  # noqa: S307 (a JSON list literal)
    assert f"ARG AGENT_UID={AGENT_UID}" in DOCKERFILE and "USER ${AGENT_UID}" in DOCKERFILE
    assert Settings().browser_image == DEFAULT_BROWSER_IMAGE
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version and DEFAULT_BROWSER_IMAGE.endswith(":" + version[1])


@pytest.mark.requires("chromium")
def test_self_test_passes() -> None:
    smokescreen = localcluster.bin_dirs()["smokescreen"] / "smokescreen"
    env = {**os.environ, "WALLESTARS_CHROMIUM": shutil.which("chromium") or "",
           "WALLESTARS_SMOKESCREEN": str(smokescreen)}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "wallestars_browser", "--self-test"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok   metadata address refused" in out.stdout


def test_the_agents_dependency_group_agrees_with_the_project() -> None:
    """The browser image installs the `browser-agent` group alone: what it shares with the
    project's own dependencies must be pinned alike, and it has none of the operator's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    group = project["dependency-groups"]["browser-agent"]
    by_name = {
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]: r for r in project["project"]["dependencies"]
    }
    shared = [r for r in group if re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] in by_name]
    assert {r for r in shared} <= set(by_name.values()), shared
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in group}
    assert not names & {"kopf", "lightkube", "boto3", "prometheus-client"}
    assert "--group browser-agent" in DOCKERFILE
