"""The node stand-in: plays the kubelet for pods bound to one Node, as local processes.

For development and tests only (DESIGN.md §9); never part of a production install.
See docs/local-cluster.md for what it does and does not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod, Secret, ServiceAccountToken
from lightkube.types import PatchType

from node_standin import cgroups
from node_standin.podenv import EnvError, command_line, container_env
from node_standin.volumes import (
    TokenSpec,
    VolumeContent,
    referenced,
    secret_data,
    token_specs,
    volume_content,
)

log = logging.getLogger("node-standin")
Obj = dict[str, Any]
HOST_IP = "127.0.0.1"
STAGE_ROOT = "/run/wallestars-standin"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """A signal death reads as 128+signal, as container runtimes report it."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Config:
    node_name: str
    root: Path
    apiserver_port: int
    kubelet_port: int
    capacity: Mapping[str, str]
    # Paths (the Python installation, the repository) kept visible inside every pod.
    keep_visible: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None


@dataclass
class ContainerRun:
    name: str
    image: str
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    memory: cgroups.MemoryCgroup | None = None  # its memory limit, when it has one

    def status(self, ready: bool) -> Obj:
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": ready and "running" in self.state,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if self.proc is not None:
            out["containerID"] = f"standin://{self.proc.pid}"
        if self.last_state:
            out["lastState"] = self.last_state
        return out


class PodRun:
    """One pod bound to this node: its processes, volumes and reported status."""

    def __init__(self, node: NodeStandin, pod: Obj) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = node.cfg.root / "pods" / self.uid
        self.log_dir = node.cfg.root / "logs" / f"{self.ns}_{self.name}_{self.uid}"
        spec = pod["spec"]
        self.init = [
            ContainerRun(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []
        ]
        self.containers = [ContainerRun(c["name"], c.get("image", "")) for c in spec["containers"]]
        self.stop = asyncio.Event()
        self.stop_reason: tuple[str, str] | None = None  # (reason, message) for a pod-level kill
        self.phase = "Pending"
        self.start_time: str | None = None
        self.tokens: dict[TokenSpec, tuple[str, float]] = {}  # spec -> (token, fetched at)
        self.volumes: dict[str, VolumeContent] = {}
        self.task: asyncio.Task[None] | None = None

    # --- API ------------------------------------------------------------------------

    async def patch_status(self, extra: Obj | None = None) -> None:
        running = all("running" in c.state for c in self.containers)
        terminal = self.phase in ("Succeeded", "Failed")
        ready = running and not terminal and not self.stop.is_set()
        conds = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "PodReadyToStartContainers", "status": "True" if self.start_time else "False"},
            {
                "type": "Initialized",
                "status": "True" if all("terminated" in c.state for c in self.init) else "False",
            },
            {"type": "ContainersReady", "status": "True" if ready else "False"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ]
        for c in conds:
            c["lastTransitionTime"] = now()
            if c["status"] == "False" and terminal:
                c["reason"] = "PodCompleted"
        status: Obj = {
            "phase": self.phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}],
            "conditions": conds,
            "containerStatuses": [c.status(ready) for c in self.containers],
        }
        if self.init:
            status["initContainerStatuses"] = [c.status(False) for c in self.init]
        if self.start_time:
            status["startTime"] = self.start_time
        status.update(extra or {})
        try:
            await self.node.client.patch(
                Pod.Status,
                self.name,
                {"status": status},
                namespace=self.ns,
                patch_type=PatchType.STRATEGIC,
            )
        except ApiError as e:
            if e.status.code != 404:
                log.warning("status of %s/%s: %s", self.ns, self.name, e)

    async def delete_now(self) -> None:
        """The kubelet's last word on a pod: delete it with no grace once it has stopped."""
        with contextlib.suppress(ApiError):
            await self.node.client.delete(Pod, self.name, namespace=self.ns, grace_period=0)

    # --- preparation ----------------------------------------------------------------

    async def fetch(
        self,
    ) -> tuple[dict[str, dict[str, str] | None], dict[str, dict[str, str] | None]]:
        secrets_needed, cms_needed = referenced(self.pod)
        secrets: dict[str, dict[str, str] | None] = {}
        cms: dict[str, dict[str, str] | None] = {}
        c = self.node.client
        for name in secrets_needed:
            try:
                secrets[name] = secret_data(
                    (await c.get(Secret, name, namespace=self.ns)).to_dict()
                )
            except ApiError as e:
                if e.status.code != 404:
                    raise
                secrets[name] = None
        for name in cms_needed:
            try:
                cms[name] = dict((await c.get(ConfigMap, name, namespace=self.ns)).data or {})
            except ApiError as e:
                if e.status.code != 404:
                    raise
                cms[name] = None
        for spec in token_specs(self.pod):
            if spec not in self.tokens:
                self.tokens[spec] = (await self.request_token(spec), time.monotonic())
        return secrets, cms

    async def request_token(self, spec: TokenSpec) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {},
            "spec": {
                "expirationSeconds": spec.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        if spec.audience:
            body["spec"]["audiences"] = [spec.audience]
        tr = cast(ServiceAccountToken, ServiceAccountToken.from_dict(body))
        res = await self.node.client.create(tr, sa, namespace=self.ns)
        if res.status is None:
            raise EnvError(f"TokenRequest for service account {sa!r} returned no token")
        return str(res.status.token)

    def write_volumes(
        self,
        secrets: Mapping[str, Mapping[str, str] | None],
        cms: Mapping[str, Mapping[str, str] | None],
    ) -> None:
        tokens = {spec: tok for spec, (tok, _) in self.tokens.items()}
        for vol in self.pod["spec"].get("volumes") or []:
            content = volume_content(
                self.pod, vol, secret=secrets.get, config_map=cms.get, tokens=tokens
            )
            self.volumes[vol["name"]] = content
            vdir = self.dir / "volumes" / vol["name"]
            vdir.mkdir(parents=True, exist_ok=True)
            for rel, (data, mode) in content.files.items():
                write_atomic(vdir / rel, data, mode)

    async def refresh_tokens(self) -> None:
        """Rewrite projected tokens at 80% of their lifetime, as the kubelet does."""
        for spec, (_, fetched) in list(self.tokens.items()):
            if time.monotonic() - fetched < 0.8 * spec.expiration_seconds:
                continue
            token = await self.request_token(spec)
            self.tokens[spec] = (token, time.monotonic())
            for vname, content in self.volumes.items():
                for rel, tspec in content.tokens.items():
                    if tspec == spec:
                        write_atomic(
                            self.dir / "volumes" / vname / rel,
                            token.encode(),
                            content.files[rel][1],
                        )

    # --- processes ------------------------------------------------------------------

    @property
    def stage(self) -> str:
        """Where the pod's own directory is bind-mounted first, inside its mount namespace.

        Volumes are mounted from here, not from their place under the stand-in's root: a
        volume mounted over /tmp must not hide the sources of the next ones when the root
        itself lives under /tmp.
        """
        return f"{STAGE_ROOT}/{self.uid}"

    def mount_script(self, container: Obj) -> str:
        """Shell lines that bind-mount the container's volumes at their mountPaths."""
        stage = shlex.quote(self.stage)
        lines = [f"mkdir -p {stage}/pod", f"mount --bind {shlex.quote(str(self.dir))} {stage}/pod"]
        mounts = sorted(
            container.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/")
        )
        targets = [os.path.normpath(m["mountPath"]) for m in mounts]
        # The stand-in's own installation (Python, the repository) must stay visible to the
        # process even if a volume lands on one of its parents (an emptyDir on /tmp with the
        # repository under /tmp): keep a handle on each, and put it back after that mount.
        keep = [
            k
            for k in self.node.cfg.keep_visible
            if any(k == t or k.startswith(t.rstrip("/") + "/") for t in targets)
        ]
        for i, k in enumerate(keep):
            lines.append(
                f"mkdir -p {stage}/keep{i} && mount --bind {shlex.quote(k)} {stage}/keep{i}"
            )
        for m, target in zip(mounts, targets, strict=True):
            rel = Path("volumes") / m["name"]
            if m.get("subPath"):
                rel = rel / m["subPath"]
            src_host = self.dir / rel
            q, qs = shlex.quote(target), f"{stage}/pod/{shlex.quote(str(rel))}"
            if src_host.is_dir() or not src_host.exists():
                src_host.mkdir(parents=True, exist_ok=True)
                lines.append(f"mkdir -p {q}")
            else:
                lines.append(f"mkdir -p {shlex.quote(os.path.dirname(target))} && touch {q}")
            lines.append(f"mount --bind {qs} {q}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {q}")
            for i, k in enumerate(keep):
                if k == target or k.startswith(target.rstrip("/") + "/"):
                    lines.append(
                        f"mkdir -p {shlex.quote(k)} && mount --bind {stage}/keep{i} {shlex.quote(k)}"
                    )
        return " && ".join(lines)

    async def spawn(self, run: ContainerRun, container: Obj, env: Mapping[str, str]) -> None:
        argv = command_line(container, env)
        (self.dir / "containers" / run.name).mkdir(parents=True, exist_ok=True)
        cwd = container.get("workingDir") or f"{self.stage}/pod/containers/{run.name}"
        script = self.mount_script(container)
        exec_line = f"cd {shlex.quote(cwd)} && exec {shlex.join(argv)}"
        script = f"{script} && {exec_line}" if script else exec_line
        run.memory = self.memory_cgroup(run, container)
        if run.memory is not None:  # join the cgroup before anything runs; exec keeps the pid
            script = f"echo $$ > {shlex.quote(str(run.memory.procs))} && {script}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = (self.log_dir / f"{run.name}.log").open("ab")
        try:
            # A private mount namespace per process, so each sees its own volumes at the
            # real mountPaths (in-cluster config works unchanged); exec keeps the pid.
            run.proc = await asyncio.create_subprocess_exec(
                "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        finally:
            logf.close()
        run.state = {"running": {"startedAt": now()}}

    def memory_cgroup(self, run: ContainerRun, container: Obj) -> cgroups.MemoryCgroup | None:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None or not self.node.cgroups:
            return None
        name = f"{self.pod['metadata']['uid']}-{run.name}-{run.restart_count}"
        return cgroups.MemoryCgroup(name, cgroups.parse_bytes(str(limit)))

    async def kill(self, run: ContainerRun, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        # As a container runtime does: SIGTERM to the container's main process only (it
        # decides how its children stop), then SIGKILL to everything left in it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    def grace(self) -> float:
        meta = self.pod["metadata"]
        g = meta.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(g)

    # --- the pod's life ---------------------------------------------------------------

    async def prepare(self) -> list[dict[str, str]] | None:
        """Volumes and env for every container; retried while something is missing."""
        last_msg = None
        first_403: float | None = None
        spec = self.pod["spec"]
        while not self.stop.is_set():
            try:
                secrets, cms = await self.fetch()
                self.write_volumes(secrets, cms)
                base = self.node.service_env()
                envs = []
                for c in (spec.get("initContainers") or []) + spec["containers"]:
                    env = container_env(
                        self.pod,
                        c,
                        secret=secrets.get,
                        config_map=cms.get,
                        base=base,
                        node_allocatable=self.node.cfg.capacity,
                    )
                    command_line(c, env)  # refuse a container with no command up front
                    envs.append(env)
                return envs
            except (EnvError, ApiError) as e:
                msg = str(e)
                if isinstance(e, ApiError) and e.status.code == 403:
                    # The Node authorizer learns of a new pod's references a moment after
                    # the pod is bound; until then it refuses, as it does to a real kubelet,
                    # which retries. Only a refusal that lasts is reported.
                    first_403 = first_403 or time.monotonic()
                    if time.monotonic() - first_403 < 10:
                        await asyncio.sleep(0.2)
                        continue
                if msg != last_msg:
                    last_msg = msg
                    for c in self.init + self.containers:
                        c.state = {
                            "waiting": {"reason": "CreateContainerConfigError", "message": msg}
                        }
                    await self.patch_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=1.0)
        return None

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            log.exception("pod %s/%s", self.ns, self.name)
            self.phase = "Failed"
            await self.patch_status({"reason": "NodeStandinError"})
        finally:
            for c in self.init + self.containers:
                await self.kill(c, 0)
            if self.pod["metadata"].get("deletionTimestamp"):
                await self.delete_now()

    async def _run(self) -> None:
        spec = self.pod["spec"]
        envs = await self.prepare()
        if envs is None:
            return
        self.start_time = now()
        init_specs = spec.get("initContainers") or []
        for i, (run, c) in enumerate(zip(self.init, init_specs, strict=True)):
            code = await self.run_to_end(run, c, envs[i])
            if code != 0 or self.stop.is_set():
                await self.finish_stopped() if self.stop.is_set() else None
                if not self.stop.is_set():
                    self.phase = "Failed"
                    await self.patch_status()
                return
        main_envs = envs[len(init_specs) :]
        self.phase = "Running"
        await asyncio.gather(
            *(
                self.supervise(run, c, env)
                for run, c, env in zip(self.containers, spec["containers"], main_envs, strict=True)
            )
        )
        await self.finish_stopped() if self.stop.is_set() else await self.finish()

    async def run_to_end(self, run: ContainerRun, c: Obj, env: Mapping[str, str]) -> int:
        await self.spawn(run, c, env)
        await self.patch_status()
        return await self.wait_exit(run)

    async def wait_exit(self, run: ContainerRun) -> int:
        assert run.proc is not None
        started = run.state.get("running", {}).get("startedAt", now())
        stop_wait = asyncio.ensure_future(self.stop.wait())
        proc_wait = asyncio.ensure_future(run.proc.wait())
        await asyncio.wait({stop_wait, proc_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not proc_wait.done():
            await self.kill(run, self.grace())
        code = exit_code(await proc_wait)
        reason = "Completed" if code == 0 else "Error"
        if run.memory is not None:
            if run.memory.oom_killed():
                reason = "OOMKilled"
            run.memory.remove()
            run.memory = None
        run.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now(),
                "containerID": f"standin://{run.proc.pid}",
            }
        }
        return code

    async def supervise(self, run: ContainerRun, c: Obj, env: Mapping[str, str]) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        backoff = 1.0
        while True:
            code = await self.run_to_end(run, c, env)
            if self.stop.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                await self.patch_status_if_others_running()
                return
            # Restart, with the kubelet's crash-loop backoff (shortened for dev clusters).
            run.last_state = run.state
            run.restart_count += 1
            run.state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {backoff:.0f}s"}
            }
            await self.patch_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=backoff)
            if self.stop.is_set():
                run.state = run.last_state
                return
            backoff = min(backoff * 2, 30.0)

    async def patch_status_if_others_running(self) -> None:
        if any(c.proc is not None and c.proc.returncode is None for c in self.containers):
            await self.patch_status()

    async def finish(self) -> None:
        codes = [c.state["terminated"]["exitCode"] for c in self.containers]
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        await self.patch_status()

    async def finish_stopped(self) -> None:
        """Stopped from outside: deletion, or the pod's own activeDeadlineSeconds."""
        self.phase = "Failed"
        extra: Obj = {}
        if self.stop_reason:
            extra = {"reason": self.stop_reason[0], "message": self.stop_reason[1]}
        for c in self.containers:
            if "terminated" not in c.state:
                c.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "finishedAt": now(),
                    }
                }
        await self.patch_status(extra)

    def request_stop(self, reason: tuple[str, str] | None = None) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class NodeStandin:
    def __init__(self, cfg: Config, client: AsyncClient) -> None:
        self.cfg = cfg
        self.client = client
        self.pods: dict[str, PodRun] = {}
        self.by_name: dict[tuple[str, str], str] = {}  # (ns, name) -> uid, for logs
        self.boot_id = str(uuid.uuid4())
        self.cgroups = cgroups.available()
        if not self.cgroups:
            log.warning("no writable cgroup v1 memory controller: memory limits not enforced")

    def service_env(self) -> dict[str, str]:
        """What every container sees: the host's PATH and the kubernetes Service vars."""
        port = str(self.cfg.apiserver_port)
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": HOST_IP,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{HOST_IP}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{HOST_IP}:{port}",
            "KUBERNETES_PORT_443_TCP_ADDR": HOST_IP,
            "KUBERNETES_PORT_443_TCP_PORT": port,
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        }

    def node_status(self) -> Obj:
        t = now()
        conds = [
            ("Ready", "True", "KubeletReady", "node stand-in is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]
        return {
            "capacity": dict(self.cfg.capacity),
            "allocatable": dict(self.cfg.capacity),
            "conditions": [
                {
                    "type": ty,
                    "status": st,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
                for ty, st, r, m in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.cfg.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.cfg.kubelet_port}},
            "nodeInfo": {
                "machineID": self.boot_id.replace("-", ""),
                "systemUUID": self.boot_id,
                "bootID": self.boot_id,
                "kernelVersion": os.uname().release,
                "osImage": "node stand-in (local processes)",
                "containerRuntimeVersion": "standin://0.1.0",
                "kubeletVersion": "v0.0.0-standin",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register(self) -> None:
        node = cast(
            Node,
            Node.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": self.cfg.node_name,
                        "labels": {
                            "kubernetes.io/hostname": self.cfg.node_name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "node.wallestars.io/standin": "true",
                        },
                    },
                }
            ),
        )
        try:
            await self.client.create(node)
        except ApiError as e:
            if e.status.code != 409:
                raise
        await self.post_status()

    async def post_status(self) -> None:
        await self.client.patch(
            Node.Status,
            self.cfg.node_name,
            {"status": self.node_status()},
            patch_type=PatchType.STRATEGIC,
        )

    async def heartbeat(self) -> None:
        """Renew the node Lease every 10 s and the Ready condition every 40 s."""
        n = 0
        while True:
            try:
                lease = cast(
                    Lease,
                    Lease.from_dict(
                        {
                            "apiVersion": "coordination.k8s.io/v1",
                            "kind": "Lease",
                            "metadata": {
                                "name": self.cfg.node_name,
                                "namespace": "kube-node-lease",
                            },
                            "spec": {
                                "holderIdentity": self.cfg.node_name,
                                "leaseDurationSeconds": 40,
                                "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                            },
                        }
                    ),
                )
                await self.client.apply(lease, field_manager="node-standin", force=True)
                if n % 4 == 3:
                    await self.post_status()
                for pr in list(self.pods.values()):
                    await pr.refresh_tokens()
            except Exception:
                log.exception("heartbeat")
            n += 1
            await asyncio.sleep(10)

    async def deadlines(self) -> None:
        """The kubelet enforces a pod's own activeDeadlineSeconds."""
        while True:
            await asyncio.sleep(0.5)
            for pr in list(self.pods.values()):
                limit = pr.pod["spec"].get("activeDeadlineSeconds")
                if limit is None or pr.start_time is None or pr.stop.is_set():
                    continue
                started = datetime.strptime(pr.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                if (datetime.now(UTC) - started).total_seconds() > float(limit):
                    pr.request_stop(
                        (
                            "DeadlineExceeded",
                            "Pod was active on the node longer than the specified deadline",
                        )
                    )

    def on_event(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        pr = self.pods.get(uid)
        if pr is not None:
            pr.pod = pod
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                pr.request_stop()
            return
        if kind == "DELETED":
            shutil.rmtree(self.cfg.root / "pods" / uid, ignore_errors=True)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):
                asyncio.get_running_loop().create_task(
                    self.client.delete(
                        Pod, meta["name"], namespace=meta["namespace"], grace_period=0
                    )
                )
            return
        pr = PodRun(self, pod)
        self.pods[uid] = pr
        self.by_name[(pr.ns, pr.name)] = uid
        if meta.get("deletionTimestamp"):
            pr.request_stop()
        pr.task = asyncio.get_running_loop().create_task(self._own(pr))

    async def _own(self, pr: PodRun) -> None:
        try:
            await pr.run()
        finally:
            # Forget the run once it has ended; the Secrets it wrote go with it.
            if pr.pod["metadata"].get("deletionTimestamp") or pr.phase in ("Succeeded", "Failed"):
                self.pods.pop(pr.uid, None)
                shutil.rmtree(pr.dir, ignore_errors=True)
                shutil.rmtree(pr.stage, ignore_errors=True)  # empty mount points on the host

    async def watch(self) -> None:
        while True:
            try:
                async for kind, pod in self.client.watch(
                    Pod, namespace=ALL_NS, fields={"spec.nodeName": self.cfg.node_name}
                ):
                    self.on_event(kind, pod.to_dict())
            except Exception as e:  # a broken watch is restarted: the kubelet never gives up
                log.warning("pod watch restarted: %s", e)
                await asyncio.sleep(1)

    async def shutdown(self) -> None:
        for pr in list(self.pods.values()):
            pr.request_stop(("NodeShutdown", "the node stand-in is shutting down"))
        tasks = [pr.task for pr in self.pods.values() if pr.task]
        if tasks:
            await asyncio.wait(tasks, timeout=20)

    async def run(self) -> None:
        from node_standin.logserver import start_log_server

        self.cfg.root.mkdir(parents=True, exist_ok=True)
        await self.register()
        runner = await start_log_server(self)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        background = [
            loop.create_task(self.heartbeat()),
            loop.create_task(self.deadlines()),
            loop.create_task(self.watch()),
        ]
        log.info("node %s ready", self.cfg.node_name)
        await stop.wait()
        for t in background:
            t.cancel()
        await self.shutdown()
        await runner.cleanup()


def parse_capacity(items: list[str]) -> dict[str, str]:
    cap = {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "100Gi"}
    for item in items:
        k, _, v = item.partition("=")
        cap[k] = v
    return cap


async def amain(cfg: Config, kubeconfig: Path) -> None:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="node-standin")
    try:
        await NodeStandin(cfg, client).run()
    finally:
        await client.close()


def json_log_setup() -> None:
    class Fmt(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            out = {
                "time": now(),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return json.dumps(out)

    h = logging.StreamHandler()
    h.setFormatter(Fmt())
    logging.basicConfig(level=logging.INFO, handlers=[h])
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
