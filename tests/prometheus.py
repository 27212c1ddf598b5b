"""A real Prometheus server on loopback (built from its Go module by hack/build-tools.sh),
scraping given targets every second and loading given rule groups, for the chart's tests."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import localcluster
import yaml
from harness import free_port, stop_process, wait_for


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{q}", timeout=10) as r:  # noqa: S310 (loopback)
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # a bad query answers 400 with its error
            return json.loads(e.read())

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer: {"status": "success", "data": {"result": [...]}} or an error."""
        return dict(self.api("query", query=expr))

    def stop(self) -> None:
        stop_process(self.proc, 15)


def start(work: Path, jobs: dict[str, list[str]], rule_groups: list[dict[str, Any]]) -> Prometheus:
    """``jobs``: job name -> host:port targets (path /metrics). Waits until every target
    was scraped up at least once."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    binary = localcluster.bin_dirs()["prometheus"] / "prometheus"
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [str(binary), f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def all_up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
        try:
            targets = prom.api("targets")["data"]["activeTargets"]
        except (OSError, ValueError):  # ValueError: "Service Unavailable" while it starts
            return False
        return len(targets) == sum(map(len, jobs.values())) and all(
            t["health"] == "up" for t in targets
        )

    wait_for("Prometheus to scrape every target", all_up, timeout=60)
    return prom
