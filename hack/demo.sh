#!/usr/bin/env bash
# The main job on the embedded default: see hack/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=$PWD/hack:$PWD exec .venv/bin/python hack/demo.py
