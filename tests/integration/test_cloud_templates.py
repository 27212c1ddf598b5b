"""The Lambda zip as users build it (package.sh runs pip), imported on its own."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from harness import REPO

LAMBDA = REPO / "agent_images" / "aws_lambda"


def test_package_builds_a_zip_lambda_can_import(tmp_path: Path) -> None:
    out = tmp_path / "fn.zip"
    subprocess.run(
        ["bash", str(LAMBDA / "package.sh"), str(out)], check=True, capture_output=True, timeout=600
    )
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert {
            "handler.py",
            "my_tasks.py",
            "wallestars_cloud/handler.py",
            "wallestars_sdk/client.py",
        } <= names
        assert any(n.startswith("pydantic_core/") for n in names) and any(
            n.startswith("aiohttp/") for n in names
        )
        z.extractall(tmp_path / "fn")
    # The zip's own code imports with only its own contents on the path (as on Lambda).
    probe = "import handler; print(callable(handler.handler))"
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path[:0]=['.']; {probe}"],
                       cwd=tmp_path / "fn", capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.stdout.strip() == "True", r.stderr
