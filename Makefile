# One entry point for local runs and CI. `make test` is the README's test command.
# `make run` installs only the runtime dependencies (seconds); the first `make test`, `make lint`
# or `make typecheck` adds the test and development tools to the same virtualenv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip -q --disable-pip-version-check

.PHONY: setup run test test-fast test-workers lint typecheck bench bench-load bench-cluster clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Runtime: the package and what serving needs.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# Everything: test and development extras.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	touch $(VENV)/.runtime $@

setup: $(VENV)/.dev

run: $(VENV)/.runtime
	$(BIN)/s3forward serve

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

# The in-process tiers (doubles, no server processes): under a minute, run first.
test-fast: setup
	$(BIN)/pytest -m "not server and not browser" -q

# Issue 10: the whole-service tiers again with [server] workers = 2 (HTTP worker processes).
test-workers: setup
	$(BIN)/pytest --workers 2 -m "server and not browser" -q tests/e2e tests/operating tests/ops

test: setup lint typecheck test-fast
	$(BIN)/pytest -m "server or browser"
	$(MAKE) test-workers

bench: setup
	$(BIN)/python bench/core.py

bench-load: setup
	$(BIN)/python bench/load.py

bench-cluster: setup
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
