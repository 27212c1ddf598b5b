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
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "setup: Go is required (see docs/local-cluster.md)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "setup: kubectl is required on PATH" >&2; exit 1; }

bash hack/build-tools.sh >/dev/null

# The venv is rebuilt only when pyproject.toml changes.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -U "pip>=25.1"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[browser,cloud]' --group dev
  rm -f .venv/.installed-* && touch "$stamp"
fi
