"""Images for the real node, built here: no registry is reachable from these machines.

Bases are made from Debian's packages with mmdebstrap, standing in for the public bases
a user's ``docker build`` gets (Python's slim image, Playwright's image, Go's image),
with the same layout where our Dockerfiles rely on it. Our own images are built from
the project's Dockerfiles with buildah, given those bases as build arguments, and
imported into the node's containerd. Every image is tagged with a hash of what it is
made of, so an unchanged image is never built twice and a changed one always is.

    python hack/realnode/images.py [--node-root DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HACK = Path(__file__).resolve().parent.parent
REPO = HACK.parent
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

from realnode.config import PAUSE_IMAGE, Layout  # noqa: E402

CACHE = Path(
    os.environ.get("WALLESTARS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wallestars"
)
STORAGE = CACHE / "buildah"
SUITE = "bookworm"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
PREFIX = "localhost/wallestars"


class ImageError(RuntimeError):
    """An image could not be built or imported."""


def _run(argv: list[str], cwd: Path | None = None, quiet: bool = False) -> str:
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if out.returncode != 0:
        raise ImageError(
            f"{' '.join(argv[:6])} ... exited {out.returncode}:\n{(out.stdout + out.stderr)[-4000:]}"
        )
    if not quiet:
        print(f"images: {' '.join(argv[:3])} ... {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return out.stdout


# buildah on our own storage (overlay, in the cache), never the machine's default one.
BUILDAH = [
    "buildah",
    "--root", str(STORAGE / "storage"),
    "--runroot", "/run/wallestars-buildah",
    "--storage-driver", "overlay",
]  # fmt: skip


def buildah(*args: str, cwd: Path | None = None, quiet: bool = True) -> str:
    return _run([*BUILDAH, *args], cwd=cwd, quiet=quiet)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:12]


def files_digest(paths: Iterable[Path]) -> str:
    """A hash of the files' paths and contents (directories walked, caches skipped)."""
    h = hashlib.sha256()
    for top in sorted(paths):
        walk = sorted(top.rglob("*")) if top.is_dir() else [top]
        for f in walk:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                where = f.relative_to(REPO) if f.is_relative_to(REPO) else f
                h.update(str(where).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


# --- bases from Debian's packages ---------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A base image made with mmdebstrap: what it stands in for, and its packages."""

    name: str
    stands_in_for: str
    packages: tuple[str, ...]
    # Extra files copied from the host, as (host path, image path).
    host_trees: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def tag(self) -> str:
        extra = [f"{h}={_tree_version(h)}" for h, _ in self.host_trees]
        cas = files_digest(HOST_CAS.glob("*.crt")) if HOST_CAS.exists() else "none"
        key = _digest(SUITE, *MIRRORS, *self.packages, *extra, cas,
                      *(f"{k}={v}" for k, v in self.env))  # fmt: skip
        return f"{PREFIX}/{self.name}:{SUITE}-{key}"


def _tree_version(path: str) -> str:
    """What identifies a host tree copied into a base: Go's VERSION file."""
    version = Path(path) / "VERSION"
    return version.read_text().split()[0] if version.exists() else "unversioned"


# This machine's own trust anchors (a TLS-inspecting egress proxy's CA stands between it
# and PyPI): the local bases trust what the host trusts, as an organisation's own bases
# carry its CAs, so `pip install` in our Dockerfiles works here unchanged.
HOST_CAS = Path("/usr/local/share/ca-certificates")

# No recommends, no docs, manuals or translations: as small as Python's slim image.
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
PYTHON_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
# pip from PyPI (the Dockerfiles upgrade Debian's) reads certifi's bundle unless told.
SYSTEM_CAS = (("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),)

BASES = {
    # python:3.11-slim-bookworm: Python 3.11 and pip, installing into /usr/local.
    "python": Base("python-base", "python:3.11-slim-bookworm", PYTHON_PACKAGES, env=SYSTEM_CAS),
    # Playwright's Python image: Python, pip and browsers with their libraries and fonts.
    # Debian's Chromium and Firefox ESR stand in for Playwright's builds of them (the
    # stock Firefox is driven over WebDriver BiDi); WebKit has no Debian equivalent.
    "browser": Base(
        "browser-base",
        "mcr.microsoft.com/playwright/python:v1.65.2-noble",
        # libatomic1: the Node.js that Playwright bundles as its driver needs it.
        (*PYTHON_PACKAGES, "chromium", "firefox-esr", "fonts-liberation", "libatomic1"),
        env=(("WALLESTARS_CHROMIUM", "/usr/bin/chromium"),
             ("WALLESTARS_FIREFOX", "/usr/bin/firefox-esr"), *SYSTEM_CAS),
    ),
    # node:22-bookworm-slim, where the browser image's build runs `npm ci` for Lighthouse:
    # Debian's Node.js and npm (the image runs Lighthouse with Playwright's own Node.js).
    "node": Base("node-base", "node:22-bookworm-slim", ("nodejs", "npm", "ca-certificates"),
                 env=(("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),)),
    # golang:1.26.8-bookworm: this machine's own Go toolchain (the version go.mod asks).
    "go": Base(
        "go-base",
        "golang:1.26.8-bookworm",
        ("ca-certificates", "git"),
        host_trees=((str(Path(shutil.which("go") or "/usr/local/go/bin/go").resolve().parent.parent), "/usr/local/go"),),
        env=(("PATH", "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),),
    ),
}  # fmt: skip


def build_base(base: Base) -> str:
    """The base's tag, built with mmdebstrap (and the host trees added) if missing."""
    tag = base.tag()
    if _in_storage(tag):
        return tag
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        rootfs = Path(d) / "rootfs.tar"
        _run(
            [
                "mmdebstrap", "--quiet", "--variant=minbase",
                "--include=" + ",".join(base.packages),
                "--aptopt=APT::Install-Recommends \"false\"",
                *(f"--dpkgopt={e}" for e in _DPKG_EXCLUDES),
                # Like the images they stand in for: pip installs into /usr/local.
                "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
                *(
                    [f"--customize-hook=copy-in {HOST_CAS} /usr/local/share",
                     "--customize-hook=chroot \"$1\" update-ca-certificates"]
                    if HOST_CAS.exists() else []
                ),
                "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
                SUITE, str(rootfs), *MIRRORS,
            ]
        )  # fmt: skip
        c = buildah("from", "scratch").strip()
        try:
            buildah("add", c, str(rootfs), "/")
            for host_path, image_path in base.host_trees:
                buildah("copy", c, host_path, image_path)
            for k, v in base.env:
                buildah("config", "--env", f"{k}={v}", c)
            buildah(
                "config", "--cmd", "/bin/sh", "--label", f"stands-in-for={base.stands_in_for}", c
            )
            buildah("commit", "--quiet", c, tag)
        finally:
            buildah("rm", c)
    return tag


def _in_storage(tag: str) -> bool:
    out = subprocess.run([*BUILDAH, "inspect", "--type", "image", tag], capture_output=True,
                         check=False)  # fmt: skip
    return out.returncode == 0


# --- our images ----------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One of our images: its Dockerfile, what it is built from, and its bases."""

    name: str
    dockerfile: str
    # What the Dockerfile copies (its build context's relevant part).
    inputs: tuple[str, ...]
    # Build argument -> base (BASES key).
    bases: dict[str, str] = field(default_factory=dict)

    def tag(self) -> str:
        base_tags = [f"{arg}={BASES[b].tag()}" for arg, b in sorted(self.bases.items())]
        key = _digest(files_digest(REPO / p for p in (self.dockerfile, *self.inputs)), *base_tags)
        return f"{PREFIX}/{self.name}:{key}"


IMAGES = {
    "agents": Image(
        "agents",
        "Dockerfile",
        ("pyproject.toml", "README.md", "operator", "webhooks", "agent_images", "console",
         "hack/gobuild/smokescreen"),
        {"PYTHON_BASE": "python", "GO_BASE": "go"},
    ),
    "browser-agent": Image(
        "browser-agent",
        "agent_images/Dockerfile.browser",
        ("pyproject.toml", "agent_images/wallestars_sdk", "agent_images/wallestars_browser",
         "hack/gobuild/smokescreen", "agent_images/lighthouse"),
        {"BROWSER_BASE": "browser", "GO_BASE": "go", "NODE_BASE": "node"},
    ),
}  # fmt: skip


def stale(tags: Iterable[str], current: str) -> list[str]:
    """The other tags of ``current``'s repository: older builds, never pulled back by
    anyone, which would otherwise pile up with every change (pure)."""
    repo = current.rsplit(":", 1)[0]
    return sorted(t for t in tags if t.rsplit(":", 1)[0] == repo and t != current)


def prune_storage(current: str) -> None:
    """Drop older builds of ``current``'s image from buildah's storage."""
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}").split()
    for old in stale(listed, current):
        subprocess.run([*BUILDAH, "rmi", "--force", old], capture_output=True, check=False)


def build_image(image: Image) -> str:
    tag = image.tag()
    if _in_storage(tag):
        return tag
    args = [f"--build-arg={arg}={build_base(BASES[b])}" for arg, b in sorted(image.bases.items())]
    buildah(
        "bud", "--quiet", "--pull=never", "--layers", "--network=host", "--isolation=chroot",
        "--format=oci", "-f", image.dockerfile, "-t", tag, *args, ".",
        cwd=REPO, quiet=False,
    )  # fmt: skip
    prune_storage(tag)
    for base in image.bases.values():
        prune_storage(BASES[base].tag())
    return tag


def build_pause() -> str:
    """The sandbox image: a static pause (holds the pod's namespaces, reaps zombies)."""
    src = HACK / "realnode" / "pause.c"
    tag = f"{PAUSE_IMAGE}"
    keyed = f"{tag}-{_digest(src.read_bytes())}"
    if _in_storage(keyed):
        return keyed
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        binary = Path(d) / "pause"
        _run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)], quiet=True)
        c = buildah("from", "scratch").strip()
        try:
            buildah("copy", c, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", c)
            buildah("commit", "--quiet", c, keyed)
        finally:
            buildah("rm", c)
    return keyed


def build_binary_image(name: str, binary: Path, args: tuple[str, ...] = ()) -> str:
    """An image of one static binary (an add-on built from its Go module), non-root."""
    tag = f"{PREFIX}/{name}:{_digest(binary.read_bytes(), *args)}"
    if _in_storage(tag):
        return tag
    c = buildah("from", "scratch").strip()
    try:
        buildah("copy", c, str(binary), f"/{binary.name}")
        entry = json.dumps([f"/{binary.name}", *args])
        buildah("config", "--entrypoint", entry, "--user", "65532:65532", c)
        buildah("commit", "--quiet", c, tag)
    finally:
        buildah("rm", c)
    return tag


def build_busybox() -> str:
    """local-path-provisioner's helper pods run `sh`, `mkdir` and `rm`: Debian's static
    busybox with those links (its upstream uses busybox's image, not reachable here)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise ImageError("needs Debian's busybox-static (hack/setup.sh installs it)")
    tag = f"{PREFIX}/busybox:{_digest(busybox.read_bytes())}"
    if _in_storage(tag):
        return tag
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        bin_dir = Path(d) / "bin"
        bin_dir.mkdir()
        shutil.copy(busybox, bin_dir / "busybox")
        for applet in ("sh", "mkdir", "rm", "ls", "cat"):
            (bin_dir / applet).symlink_to("busybox")
        c = buildah("from", "scratch").strip()
        try:
            buildah("copy", c, str(bin_dir), "/bin")
            buildah("config", "--cmd", "/bin/sh", c)
            buildah("commit", "--quiet", c, tag)
        finally:
            buildah("rm", c)
    return tag


# --- into the node's containerd ------------------------------------------------------


def in_node(layout: Layout, tag: str) -> bool:
    from realnode.node import ctr

    return tag in ctr(layout, "images", "list", "-q").stdout.split()


def import_image(layout: Layout, tag: str, also: str | None = None) -> None:
    """Copy an image from buildah's storage into the node's containerd (k8s.io)."""
    from realnode.node import ctr

    if not in_node(layout, tag):
        with tempfile.TemporaryDirectory(dir=CACHE) as d:
            archive = Path(d) / "image.tar"
            buildah("push", "--quiet", tag, f"docker-archive:{archive}:{tag}")
            ctr(layout, "images", "import", str(archive))
    if also and not in_node(layout, also):
        ctr(layout, "images", "tag", "--force", tag, also)


def ensure_pause(layout: Layout) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    import_image(layout, build_pause(), also=PAUSE_IMAGE)


def ensure(layout: Layout, names: Iterable[str]) -> dict[str, str]:
    """Build (if missing) and import our images, dropping the node's older builds of
    them (its image GC is off); map name -> tag in the node."""
    from realnode.node import ctr

    CACHE.mkdir(parents=True, exist_ok=True)
    tags = {}
    for name in names:
        tag = build_image(IMAGES[name])
        import_image(layout, tag)
        listed = ctr(layout, "images", "list", "-q").stdout.split()
        for old in stale(listed, tag):
            ctr(layout, "images", "rm", old, check=False)
        tags[name] = tag
    return tags


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", default=sorted(IMAGES))
    p.add_argument("--build-only", action="store_true", help="build, do not import")
    p.add_argument("--node-root", type=Path, help="the node's directory (to import into)")
    a = p.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in a.names:
        t0 = time.monotonic()
        tag = build_image(IMAGES[name])
        print(f"{name}: {tag} ({time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
