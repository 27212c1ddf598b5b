#!/usr/bin/env bash
# The main job on the embedded default: a local control plane, the CRDs, example Agents
# and AgentTasks, shown with kubectl. Leaves the cluster running; `make down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/hack
.venv/bin/python hack/localcluster.py up
export KUBECONFIG=$PWD/.cluster/dev/admin.kubeconfig
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/agents.agents.wallestars.io crd/agenttasks.agents.wallestars.io >/dev/null
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n demo -f examples/ >/dev/null
echo
echo "\$ kubectl get agents,agenttasks -n demo"
kubectl get agents,agenttasks -n demo
echo
echo "The cluster keeps running: export KUBECONFIG=$KUBECONFIG   (stop it with: make down)"
