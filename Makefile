# Self-documenting: every target has a '## ' comment; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
UV := $(BIN)/uv
# The host's pip may carry site settings (extra indexes, find-links); the project does not rely on them.
# Stages run `python -m stages.X`: the project's interpreter must come first on PATH.
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

$(VENV)/.installed: requirements/pipeline.lock requirements/dev.lock pyproject.toml
	@command -v python3.11 >/dev/null || { echo "Python 3.11 is required (python3.11 not found on PATH)." >&2; exit 1; }
	@test -x $(PY) || python3.11 -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --default-pip >/dev/null
	@test -x $(UV) || $(PY) -m pip install --quiet --isolated $(if $(CA_BUNDLE),--cert $(CA_BUNDLE)) --index-url https://pypi.org/simple uv==0.13.9
	$(UV) pip sync --python $(PY) --quiet requirements/pipeline.lock requirements/dev.lock
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv and install the locked pipeline + dev dependencies

.PHONY: lock
lock: ## re-resolve requirements/*.in into the lock files (serving first: it constrains the rest)
	@test -x $(UV) || $(MAKE) install
	cd requirements && ../$(UV) pip compile serving.in $(LOCK_FLAGS) -o serving.lock
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
	@$(PY) -c 'import logging, sys; sys.excepthook = lambda t, e, tb: print(f"error: {e}", file=sys.stderr); logging.basicConfig(level=logging.INFO, format="wheels: %(message)s"); from pipeline.steps.containerize import resolve_wheels; print(f"wheels: {resolve_wheels()} matches requirements/serving.lock")'

.PHONY: repro
repro: install docker base-image ## run the whole pipeline (dvc repro) up to a smoke-checked image; initialises git/DVC in a fresh copy
	@test -d .git || git init -q
	@test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc repro

.PHONY: test
test: install docker base-image ## run every test (unit, integration, e2e, real Docker engine); slow ones included
	$(BIN)/pytest

.PHONY: test-unit
test-unit: install ## run the fast unit tests only
	$(BIN)/pytest tests/unit

.PHONY: lint
lint: install ## ruff + mypy --strict on pipeline/
	$(BIN)/ruff check pipeline stages tests
	$(BIN)/ruff format --check pipeline stages tests
	$(BIN)/mypy

.PHONY: mlflow-ui
mlflow-ui: install ## browse runs and registered models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

.PHONY: clean
clean: ## remove pipeline outputs (data/prepared, models, metrics, plots, reports); keeps .venv and mlflow.db
	rm -rf data/prepared models metrics plots reports build
