# One entry point for local runs and CI. `make test` is the README's test command.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast lint typecheck bench bench-load bench-cluster clean

$(BIN)/s3forward: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/s3forward

run: setup
	$(BIN)/s3forward serve

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

# The in-process tiers (doubles, no server processes): under a minute, run first.
test-fast: setup
	$(BIN)/pytest -m "not server and not browser" -q

test: setup lint typecheck test-fast
	$(BIN)/pytest -m "server or browser"

bench: setup
	$(BIN)/python bench/core.py

bench-load: setup
	$(BIN)/python bench/load.py

bench-cluster: setup
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
