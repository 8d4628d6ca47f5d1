# Self-documenting: every target has a '## ' comment; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
UV := $(BIN)/uv
# The host's pip may carry site settings (extra indexes, find-links); the project does not rely on them.
# Stages run `python -m pipeline.stages.X`: the project's interpreter must come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_CONFIG_FILE := /dev/null
export UV_NATIVE_TLS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
CA_BUNDLE := $(wildcard /etc/ssl/certs/ca-certificates.crt)
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# Byte-code: Python writes a module's .pyc the first time it imports it, unless
# PYTHONDONTWRITEBYTECODE is set (some machines and images set it). Then nothing is cached and
# every process re-compiles what it imports (MLflow alone: seconds of every `pipeline` command,
# DVC stage and test that spawns one), so install compiles all of site-packages once (1-2 min
# on 2 cores, 9/10 of a cold install). Without it, install skips that: each process compiles
# only what it imports, once. The workflows unset it for their jobs for that reason.
COMPILE := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)
# uv, the installer: put in the new venv by its base interpreter's pip (--prefix; no pip in the
# venv, which ensurepip takes seconds to install), else by a pip ensurepip puts in the venv.
PIP_UV := --quiet --isolated --disable-pip-version-check --root-user-action=ignore \
	$(if $(CA_BUNDLE),--cert $(CA_BUNDLE)) --index-url https://pypi.org/simple uv==0.13.9
$(VENV)/.installed: requirements/pipeline.lock requirements/dev.lock pyproject.toml
	@command -v python3.11 >/dev/null || { echo "Python 3.11 is required (python3.11 not found on PATH)." >&2; exit 1; }
	@test -x $(PY) || python3.11 -m venv --without-pip $(VENV)
	@test -x $(UV) || "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m pip install $(PIP_UV) --prefix $(VENV) 2>/dev/null \
		|| { $(PY) -m ensurepip --default-pip >/dev/null && $(PY) -m pip install $(PIP_UV); }
	$(UV) pip sync --python $(PY) --quiet $(COMPILE) requirements/pipeline.lock requirements/dev.lock
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@$(if $(COMPILE),$(PY) -m compileall -q -j 0 pipeline serving estimators tools >/dev/null,:)
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv and install the locked pipeline + dev dependencies

.PHONY: lock
lock: ## re-resolve requirements/*.in into the lock files (serving first: it constrains the rest)
	@test -x $(UV) || $(MAKE) install
	cd requirements && ../$(UV) pip compile serving.in $(LOCK_FLAGS) -o serving.lock
	cd requirements && ../$(UV) pip compile serving-onnx.in -c serving.lock $(LOCK_FLAGS) -o serving-onnx.lock
	cd requirements && ../$(UV) pip compile pipeline.in -c serving.lock $(LOCK_FLAGS) -o pipeline.lock
	cd requirements && ../$(UV) pip compile dev.in -c pipeline.lock $(LOCK_FLAGS) -o dev.lock

# Prints "BASE FALLBACK" from params.yaml (validated); a bad params.yaml is one line, no traceback.
IMAGE_REFS = $(PY) -c 'import sys; sys.excepthook = lambda t, e, tb: print(f"error: {e}", file=sys.stderr); from pipeline.config import load_params; i = load_params().image; print(i.base, i.fallback_base)'

.PHONY: docker
docker: ## make sure a Docker engine answers (root Debian: installs docker.io, starts dockerd)
	@scripts/ensure-docker.sh

.PHONY: base-image
base-image: install docker ## build image.fallback_base from Debian packages if image.base is absent and unpullable
	@refs=$$($(IMAGE_REFS)) || exit 1; set -- $$refs; \
	if docker image inspect "$$1" >/dev/null 2>&1; then \
		echo "base-image: $$1 is present; nothing to build"; \
	elif timeout 300 docker pull "$$1" >/dev/null 2>&1; then \
		echo "base-image: pulled $$1"; \
	else \
		echo "base-image: $$1 is neither present nor pullable: using $$2, built from Debian packages"; \
		scripts/build-base-image.sh "$$2"; \
	fi

.PHONY: wheels
wheels: install ## download the wheels serving.lock pins for the image to build/wheels (the build needs no network)
	$(BIN)/pipeline wheels

.PHONY: train-image
train-image: install docker base-image ## build pipeline-train:latest, the pipeline's locked environment + git as an image (offline build; docs/training-image.md)
	$(BIN)/pipeline train-image

.PHONY: repro
repro: install docker base-image ## run the whole pipeline (dvc repro) up to a smoke-checked image; initialises git/DVC in a fresh copy
	@test -d .git || git init -q
	@test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc repro

.PHONY: contract-test
contract-test: install docker ## run the contract suite against the built image (build/image.json); writes build/contract-report.json
	$(BIN)/pipeline contract-test

REGISTRY_PORT ?= 5000
.PHONY: registry
registry: ## start a local OCI registry on 127.0.0.1:5000 (REGISTRY_PORT; installs Debian's docker-registry); see docs/release.md
	@REGISTRY_PORT=$(REGISTRY_PORT) scripts/registry.sh start
	@echo "registry: for the release commands: export REGISTRY=127.0.0.1:$(REGISTRY_PORT) REGISTRY_INSECURE=true IMAGE_REPOSITORY=<owner>/<name>"

.PHONY: registry-stop
registry-stop: ## stop the local registry (its storage stays until you delete it)
	@REGISTRY_PORT=$(REGISTRY_PORT) scripts/registry.sh stop

.PHONY: swarm
swarm: docker ## make this engine a one-node Swarm manager if it is in none (idempotent); see docs/deploy.md
	@scripts/swarm.sh start

.PHONY: test
# The suite runs on TEST_WORKERS pytest-xdist workers (tests/support/system.py groups it; the
# Swarm tests stay on one worker): 28.5-31 min against 49 serially on 2 cores (fresh clones,
# 2026-12-07: 716 and 719 passed; the one 2-worker failure before, two promotions racing for
# MLflow's SQLite store, was fixed by a 30 s busy timeout). The cores stay ~92 % busy (vmstat),
# so a third worker would not help: only less work does. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install docker base-image ## run every test (unit, integration, e2e, real Docker engine) on 2 workers (TEST_WORKERS=0: in one process)
	$(BIN)/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder) --durations=25

.PHONY: test-unit
test-unit: install ## run the fast unit tests only
	$(BIN)/pytest tests/unit

WORKFLOWS := $(wildcard .github/workflows/*.yml)
.PHONY: lint
lint: install ## ruff + mypy --strict (pipeline/ serving/ tools/), hadolint, actionlint + schema + zizmor (workflows)
	$(BIN)/ruff check pipeline serving estimators tools tests conftest.py
	$(BIN)/ruff format --check pipeline serving estimators tools tests conftest.py
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile train.Dockerfile
	$(if $(WORKFLOWS),$(BIN)/actionlint $(WORKFLOWS))
	$(if $(WORKFLOWS),$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS))
	$(if $(WORKFLOWS),$(BIN)/zizmor --offline --persona auditor --no-progress $(WORKFLOWS))

EVENT ?= push
.PHONY: workflows
workflows: install docker ## run the GitHub workflows here with act (EVENT=push; WORKFLOW=promote.yml EVENT=workflow_dispatch ARGS="--input k=v ..."); see README "CI/CD"
	$(PY) -m tools.act $(EVENT) $(if $(WORKFLOW),--workflow $(WORKFLOW)) $(ARGS)

BENCH_ARGS ?=
.PHONY: bench
bench: install docker base-image ## benchmark vs MLflow/BentoML (serving, startup, size, pipeline, promotion) -> tools/bench/results.md (~15 min; BENCH_ARGS=--quick)
	@missing=$$(for tool in wrk curl; do command -v $$tool >/dev/null 2>&1 || echo $$tool; done); \
	[ -z "$$missing" ] || { \
		[ "$$(id -u)" = 0 ] && [ -r /etc/debian_version ] || { echo "bench: missing" $$missing": sudo apt-get install" $$missing >&2; exit 1; }; \
		echo "bench: installing Debian's" $$missing "(wrk: the load generator)"; \
		apt-cache policy wrk 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get -qq update >/dev/null; \
		DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends $$missing >/dev/null; }
	$(PY) -m tools.bench $(BENCH_ARGS)

.PHONY: mlflow-ui
mlflow-ui: install ## browse runs and registered models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

.PHONY: clean
clean: ## remove pipeline outputs (data/prepared, models, metrics, plots, reports); keeps .venv and mlflow.db
	rm -rf data/prepared models metrics plots reports build
