# Ratline's two commands: `make demo` and `make test`. Everything they need is
# installed by the targets below, so a fresh machine works.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .ratline/demo
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help setup deps sysdeps binaries images lint typecheck chart-lint test test-unit test-integration test-e2e demo down bench clean

help:
	@echo "make demo   - local cluster on a containerd node + Postgres + the chart, runs an example to completion"
	@echo "make test   - installs what is missing, then ruff, mypy, import contracts and pytest"
	@echo "make down   - stops what make demo started"
	@echo "make bench  - benchmarks (Ratline vs DBOS) into bench/results/"

setup: deps sysdeps binaries images

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

deps: $(STAMP)

sysdeps:
	@bash tests/cluster/sysdeps.sh

binaries:
	@bash tests/cluster/build.sh etcd helm kubernetes

# operator, worker, examples, e2e and pause images for the real node (cached by content hash)
images: sysdeps
	@bash worker-image/build.sh >/dev/null

lint: deps
	$(VENV)/bin/ruff check operator tests bench examples
	$(VENV)/bin/ruff format --check operator tests bench examples
	$(VENV)/bin/lint-imports pyproject.toml

typecheck: deps
	$(VENV)/bin/mypy

chart-lint: binaries
	"$$(bash tests/cluster/build.sh paths | sed -n 's/^HELM_BIN=//p')/helm" lint charts/ratline --strict -f charts/ratline/ci/external-db-values.yaml

test: setup lint typecheck chart-lint
	$(PY) -m pytest -p no:cacheprovider tests

test-unit: deps
	$(PY) -m pytest tests/unit

test-integration: deps sysdeps
	$(PY) -m pytest tests/integration

test-e2e: setup
	$(PY) -m pytest tests/e2e

demo: setup
	$(PY) -m tests.cluster.demo up --state $(STATE)

down: deps
	$(PY) -m tests.cluster.demo down --state $(STATE)

bench: deps sysdeps
	$(PY) -m bench

clean: down
	rm -rf $(VENV) .ratline
