# Wallestars Agents: the targets the README names.
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/hack

.PHONY: demo test setup lint fmt typecheck unit integration up down status sync-crds dashboards tools clean

demo: ## The main job, end to end on a local control plane
	WALLESTARS_TOOLS="kubernetes etcd helm smokescreen coredns kube-router local-path-provisioner crictl" bash hack/setup.sh
	bash hack/demo.sh

test: setup lint typecheck ## Everything CI runs
	$(PY) -m pytest --durations=25

setup: ## venv, Debian packages, control plane and helm binaries
	bash hack/setup.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

fmt:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck:
	.venv/bin/mypy

unit: ## Pure-logic tests only (seconds, no cluster)
	$(PY) -m pytest tests/unit

integration:
	$(PY) -m pytest tests/integration

up: setup ## Start the dev control plane in .cluster/dev
	$(PY) hack/localcluster.py up

down:
	$(PY) hack/localcluster.py down

status:
	$(PY) hack/localcluster.py status

sync-crds: ## Copy crds/ (the source of truth) into the chart
	cp $$(grep -l 'kind: CustomResourceDefinition' crds/*.yaml) charts/wallestars-agents/crds/
	cp $$(grep -L 'kind: CustomResourceDefinition' crds/*.yaml) charts/wallestars-agents/templates/

dashboards: ## Write the chart's Grafana dashboards from hack/dashboards.py
	$(PY) hack/dashboards.py

tools:
	bash hack/build-tools.sh

clean: down
	rm -rf .cluster .venv .mypy_cache .ruff_cache .pytest_cache
