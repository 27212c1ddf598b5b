"""Memory limits for the stand-in's containers, with the kernel's own OOM killer.

A container with ``resources.limits.memory`` runs in a cgroup (v1 memory controller, as
on these machines) with that limit; when the kernel OOM-kills it, the container is
reported terminated with reason OOMKilled and exit code 137, as the kubelet does.
Without a writable memory controller, limits are not enforced (and the stand-in says so
in its log once).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/memory")
PARENT = ROOT / "wallestars-standin"

_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def parse_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``64Mi``, ``1G``, ``1e9``, ``128974848``) in bytes."""
    m = re.fullmatch(
        r"([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity.strip()
    )
    if m is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2) or ""])


def available() -> bool:
    try:
        PARENT.mkdir(exist_ok=True)
    except OSError:
        return False
    return (PARENT / "memory.limit_in_bytes").exists()


class MemoryCgroup:
    def __init__(self, name: str, limit: int) -> None:
        self.dir = PARENT / name
        self.dir.mkdir(exist_ok=True)
        (self.dir / "memory.limit_in_bytes").write_text(str(limit))
        memsw = self.dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swapping past the limit either
            with contextlib.suppress(OSError):
                memsw.write_text(str(limit))

    @property
    def procs(self) -> Path:
        return self.dir / "cgroup.procs"

    def oom_killed(self) -> bool:
        for line in (self.dir / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return False

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.dir.rmdir()
