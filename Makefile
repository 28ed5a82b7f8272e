# The two commands: `make demo` and `make test`. Both build .venv from uv.lock first.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: demo test test-reliability ui defs lint format env clean bench sql typecheck

# uv itself: use the one on PATH, else bootstrap it with pip into .tools (no system install).
.tools/bin/uv:
	$(PYTHON) -m pip install --quiet --target .tools/lib uv
	mkdir -p .tools/bin && ln -sf ../lib/bin/uv .tools/bin/uv

# --compile-bytecode: every command (a CLI run, a Dagster run, a test's subprocess) then imports
# from .pyc, even where PYTHONDONTWRITEBYTECODE is set (it is on the CI machine): importing the
# Dagster definitions took 3.1 s from source, 1.9 s from bytecode; compiling takes ~10 s once.
$(VENV)/.synced: pyproject.toml uv.lock | $(if $(shell command -v uv 2>/dev/null),,.tools/bin/uv)
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

env: $(VENV)/.synced

demo: env
	$(VENV)/bin/export-pipeline demo

test: env
	$(VENV)/bin/python -m pytest -q -m "not reliability"

# Crash, outage and model-based tests (slower); .ci/run runs them after `make test`.
# HYPOTHESIS_PROFILE=long runs the state machine for many more examples.
test-reliability: env
	$(VENV)/bin/python -m pytest -q -m reliability

# The Dagster UI (webserver and daemon): `dg dev -w`, i.e. `dagster dev -w`, which Dagster 1.13
# calls superseded by `dg dev`. DAGSTER_HOME and every setting as the CLI reads them (config.py:
# the project's .env under the environment; a relative DAGSTER_HOME is under the project root),
# the home given the project's instance settings (dagster.yaml; a warning names those its own
# file lacks). It starts in DAGSTER_HOME, not here: in a directory holding a .env, Dagster loads
# that file over the environment (and `dg dev` without -w would start here). Options through
# UI_ARGS, e.g. `make ui UI_ARGS="-p 3001"`.
UI_ARGS ?=
DAGSTER_HOME_OF_PROJECT = $(VENV)/bin/python -c \
	'from export_pipeline.config import ensure_dagster_home; print(ensure_dagster_home())'

ui: env
	home="$$($(DAGSTER_HOME_OF_PROJECT))" && cd "$$home" && \
	DAGSTER_HOME="$$home" $(CURDIR)/$(VENV)/bin/dg dev -w $(CURDIR)/workspace.yaml $(UI_ARGS)

# Dagster's project CLI on this project ([tool.dg] in pyproject.toml): check that the definitions
# load, then list them. With the project's DAGSTER_HOME, so that `dg` records no telemetry, and
# from there, as `make ui`, so that the settings are read as the CLI reads them.
defs: env
	home="$$($(DAGSTER_HOME_OF_PROJECT))" && cd "$$home" && export DAGSTER_HOME="$$home" && \
	$(CURDIR)/$(VENV)/bin/dg check defs --target-path $(CURDIR) && \
	$(CURDIR)/$(VENV)/bin/dg list defs --target-path $(CURDIR)

# The analysts' SQL shell on analytics.duckdb, with the project's DuckDB (docs/queries.md).
sql: env
	$(VENV)/bin/export-pipeline sql

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the package, configured in pyproject.toml ([tool.mypy]).
typecheck: env
	$(VENV)/bin/mypy

format: env
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The benchmark (bench/README.md): its own environment, the product plus the `bench` group (dlt,
# connectorx, psutil, py-spy), so the shared .venv keeps exactly the locked default groups. No
# `dev` group: the product is measured as a user installs it (pandera imports hypothesis, a
# test tool, on its first validation when it is installed: 0.5 s inside the first batch).
# Options through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--scale 0.1 --repeat 1"`.
BENCH_VENV := bench/.venv
BENCH_ARGS ?=

bench: | $(if $(shell command -v uv 2>/dev/null),,.tools/bin/uv)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(BENCH_VENV) $(UV) sync --frozen --no-dev --group bench \
		--quiet --compile-bytecode
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Start over (warehouse, lake, Dagster run history, embedded source): `export-pipeline reset`.
clean:
	rm -rf $(VENV) .tools data/*.duckdb data/*.duckdb.wal
