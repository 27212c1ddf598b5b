#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, and nothing twice:
# Debian packages (only if a command is missing), the Go-built control plane and helm
# and smokescreen (cached outside the repo by version), and the Python virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v git >/dev/null || need_apt+=(git)
command -v make >/dev/null || need_apt+=(make)
# The browser agent drives Debian's Chromium through Playwright (DESIGN.md §9).
command -v chromium >/dev/null || need_apt+=(chromium fonts-liberation)
command -v firefox-esr >/dev/null || need_apt+=(firefox-esr)
# The real node (hack/realnode, docs/local-cluster.md): the container runtime, CNI
# plugins, netfilter tools, and what builds images without a registry or a daemon.
command -v containerd >/dev/null || need_apt+=(containerd runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ipset >/dev/null || need_apt+=(ipset)
command -v nft >/dev/null || need_apt+=(nftables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "setup: Go is required (see docs/local-cluster.md)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "setup: kubectl is required on PATH" >&2; exit 1; }

# The venv and the images are mostly downloads and unpacking: they run while the Go
# builds (CPU-bound, the longest part of a first run) compile, not after them.
python_side() {
  # The venv is rebuilt only when pyproject.toml changes.
  stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -U "pip>=25.1"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[cloud]' --group dev
    rm -f .venv/.installed-* && touch "$stamp"
  fi
  # Lighthouse for the browser agent's tests (performance with engine lighthouse), from
  # its lock file, once per lock (harness.lighthouse_cli finds it).
  lh=$HOME/.cache/wallestars/lighthouse-$(sha256sum agent_images/lighthouse/package-lock.json | cut -c1-16)
  if [ ! -f "$lh/.installed" ]; then
    mkdir -p "$lh" && cp agent_images/lighthouse/package.json agent_images/lighthouse/package-lock.json "$lh/"
    (cd "$lh" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) && touch "$lh/.installed"
  fi
  # The images the real node runs, from our Dockerfiles on bases made from Debian's
  # packages (hack/realnode/images.py): built once per content, cached outside the repo.
  PYTHONPATH=hack .venv/bin/python hack/realnode/images.py >/dev/null
}
log=$(mktemp)
python_side >"$log" 2>&1 &
side=$!
if ! bash hack/build-tools.sh >/dev/null; then
  kill "$side" 2>/dev/null; wait "$side" 2>/dev/null; cat "$log" >&2; rm -f "$log"; exit 1
fi
if ! wait "$side"; then
  echo "setup: the venv or the images failed:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
fi
cat "$log" >&2; rm -f "$log"
