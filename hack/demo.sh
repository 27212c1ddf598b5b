#!/usr/bin/env bash
# The main job on the embedded default: see hack/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs neither Prometheus nor the chart-checking tool (the tests build those);
# it needs the real node's add-ons.
export WALLESTARS_TOOLS="kubernetes etcd helm smokescreen coredns kube-router local-path-provisioner crictl"
PYTHONPATH=$PWD/hack:$PWD exec .venv/bin/python hack/demo.py
