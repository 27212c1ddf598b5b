#!/usr/bin/env bash
# The main job on the embedded default: see hack/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs neither Prometheus nor the chart-checking tool (the tests build those).
export WALLESTARS_TOOLS="kubernetes etcd helm smokescreen"
PYTHONPATH=$PWD/hack:$PWD exec .venv/bin/python hack/demo.py
