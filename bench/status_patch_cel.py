"""What the AgentTask CRD's CEL rules cost on a status write.

    .venv/bin/python bench/status_patch_cel.py [--patches 2000] [--rounds 2]

apiextensions evaluates every x-kubernetes-validations rule of a CRD, the spec's
included, on each write of the status subresource too. This starts a control plane,
then alternates the CRD as it is in crds/ with a copy whose spec has no CEL rules, and
sends status merge patches (8 in flight) to 50 AgentTasks, reporting the API server's
CPU per patch for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import localcluster
import yaml
from harness import REPO, Kubectl
from wallestars_api.kubeclient import KubeClient

from bench.load import cpu_seconds

BASE = "/apis/agents.wallestars.io/v1alpha1/namespaces/pb/agenttasks"
TASKS = 50


def strip_rules(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("x-kubernetes-validations", None)
        for v in node.values():
            strip_rules(v)
    elif isinstance(node, list):
        for v in node:
            strip_rules(v)


def crd_variant(state: Path, name: str) -> Path:
    crd = yaml.safe_load((REPO / "crds" / "agents.wallestars.io_agenttasks.yaml").read_text())
    if name == "no-spec-cel":
        strip_rules(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])
    path = state / f"crd-{name}.yaml"
    path.write_text(yaml.safe_dump(crd))
    return path


async def patches(kubeconfig: Path, api_pid: int, n: int) -> dict[str, float]:
    client = KubeClient.from_env(kubeconfig)
    for i in range(TASKS):
        await client.request("POST", BASE, {
            "apiVersion": "agents.wallestars.io/v1alpha1", "kind": "AgentTask", "metadata": {"name": f"t{i}"},
            "spec": {"agentRef": "fn", "type": "custom", "payload": {"data": {"behaviour": "succeed"}}}})  # fmt: skip
    sem = asyncio.Semaphore(8)
    latencies: list[float] = []

    async def one(j: int) -> None:
        cond = {"type": "Running", "status": "True", "reason": "AgentRunning", "message": f"step {j}",
                "lastTransitionTime": "2026-12-01T00:00:00Z"}  # fmt: skip
        async with sem:
            t = time.perf_counter()
            await client.request("PATCH", f"{BASE}/t{j % TASKS}/status",
                                 {"status": {"phase": "Running", "progress": j % 100, "conditions": [cond]}},
                                 content_type="application/merge-patch+json")  # fmt: skip
            latencies.append(time.perf_counter() - t)

    cpu0, t0 = cpu_seconds(api_pid), time.perf_counter()
    await asyncio.gather(*(one(j) for j in range(n)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds(api_pid) - cpu0
    await client.close()
    return {"patches_per_second": round(n / wall), "apiserver_cpu_ms_per_patch": round(cpu / n * 1000, 2),
            "p50_ms": round(statistics.median(latencies) * 1000, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--patches", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    state = REPO / ".cluster" / "bench-cel"
    cluster = localcluster.up(state, ports=localcluster.Ports.free())
    try:
        k = Kubectl(cluster.kubeconfig)
        api_pid = int(json.loads((state / "state.json").read_text())["pids"]["kube-apiserver"])
        k("create", "namespace", "pb")
        for rnd in range(a.rounds):
            for name in ("as-is", "no-spec-cel"):
                k(
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    str(crd_variant(state, name)),
                )
                k("wait", "--for=condition=Established", "crd", "--all")
                time.sleep(2)  # the API server swaps in the new schema
                k("delete", "agenttasks", "--all", "-n", "pb", "--wait=true")
                out = asyncio.run(patches(cluster.kubeconfig, api_pid, a.patches))
                print(json.dumps({"crd": name, "round": rnd, **out}), flush=True)
    finally:
        localcluster.down(state)


if __name__ == "__main__":
    main()
