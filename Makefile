# Tabular MLOps bundle. `make` alone lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-lock
# uv from PATH if present, else the one pip installs into the base interpreter.
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
PYTEST_ARGS ?=
ROWS ?= 307511
# Every lock that ships: the bundle, the serving image and the MLflow image.
AUDIT_LOCKS := requirements.txt serving/requirements.txt docker/mlflow/requirements.txt
AUDIT = $(BIN)/python tools/audit.py $(AUDIT_LOCKS)
# No --quiet: it hides warnings from --strict's count, so a broken link would pass (mkdocs#4126).
# The variable silences Material's end-of-life banner only.
MKDOCS = NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

## Show this help
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-zA-Z_-]+:/{if(doc){split($$1,t,":"); printf "  %-10s %s\n", t[1], doc}; doc=""}' $(MAKEFILE_LIST)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(BIN)/python || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.txt requirements-dev.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

## Create .venv and install the locked dependencies and the bundle (runs by itself when needed)
install: $(STAMP)

## Recompile the locks: requirements.txt, requirements-dev.txt, serving/ and docker/mlflow/ requirements.txt
lock:
	$(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt
	cd serving && $(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	cd docker/mlflow && $(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt

## Generate data, then train, score and monitor both models through their Airflow DAGs
demo: $(STAMP)
	$(BIN)/python -m tabular_mlops.demo

## Airflow on the demo's metadata DB: UI on 127.0.0.1:8080 (PORT=), scheduler, dag-processor, triggerer
airflow: $(STAMP)
	$(BIN)/python -m tabular_mlops.local_airflow --port $(or $(PORT),8080)
.PHONY: airflow

## Headless Chromium for the browser checks (Debian's package, installed when missing and root)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	    else echo "no headless Chromium: apt-get install chromium (the browser checks skip without it)"; fi; }

## Lint (ruff, with Airflow 3 and bandit rules), check formatting and types, audit the locks, build the docs (strict), run the tests
test: $(STAMP) browser
	$(BIN)/ruff check dags plugins serving tests benchmarks tools
	$(BIN)/ruff format --check dags plugins serving tests benchmarks tools
	$(BIN)/mypy
	$(AUDIT)
	$(MKDOCS) build --strict
	$(BIN)/python -m pytest -m "not stack" $(PYTEST_ARGS)

## Audit the pinned locks with pip-audit against PyPI's advisory data; exceptions live in audit-ignore.toml
audit: $(STAMP)
	$(AUDIT)

## The native production stack on loopback: Airflow with Celery on Postgres + Redis, MLflow server, S3, SMTP, serving
test-stack: $(STAMP)
	$(BIN)/python -m pytest -m stack $(PYTEST_ARGS)

## Lint only (ruff and mypy)
lint: $(STAMP)
	$(BIN)/ruff check dags plugins serving tests benchmarks tools
	$(BIN)/mypy

## Time the Home Credit generator at full scale (ROWS=307511) and report its peak memory
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py --rows $(ROWS)

## Time validated ingest and the feature build at full scale (ROWS=307511; RAW=folder reuses CSVs)
bench-home-credit: $(STAMP)
	$(BIN)/python benchmarks/bench_home_credit.py --rows $(ROWS) $(if $(RAW),--raw $(RAW)) --json benchmarks/home_credit.json

## Time batch scoring: 1,000,000 churn rows and 307,511 credit_risk applicants (RAW=folder reuses CSVs)
bench-scoring: $(STAMP)
	$(BIN)/python benchmarks/bench_scoring.py $(if $(RAW),--raw $(RAW)) --json benchmarks/scoring.json

## Time a monitoring run on the full-size credit_risk feature table (RAW=folder reuses CSVs)
bench-monitoring: $(STAMP)
	$(BIN)/python benchmarks/bench_monitoring.py $(if $(RAW),--raw $(RAW)) --json benchmarks/monitoring.json

## Time batch scoring with and without a shadow challenger (ROWS=200000 here) and the comparison
bench-challenger: $(STAMP)
	$(BIN)/python benchmarks/bench_challenger.py --rows $(if $(filter 307511,$(ROWS)),200000,$(ROWS)) --json benchmarks/challenger.json

## Time materialising credit_risk's history features into the online store (ROWS=307511; RAW=folder reuses CSVs)
bench-materialize: $(STAMP)
	$(BIN)/python benchmarks/bench_materialize.py --rows $(ROWS) $(if $(RAW),--raw $(RAW)) --json benchmarks/materialize.json

## The full-size credit chain in one process with dag.test(): train, score 48,744 applicants, monitor (ROWS=307511, RAW=)
bench-chain: $(STAMP)
	$(BIN)/python benchmarks/bench_chain.py --rows $(ROWS) $(if $(RAW),--raw $(RAW)) --json benchmarks/chain.json

## Time credit_risk training on generated applicants (ROWS=20000 by default here)
bench-train: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py --rows $(if $(filter 307511,$(ROWS)),20000,$(ROWS)) --json benchmarks/train.json

## Serving latency and throughput, the bundle beside `mlflow models serve` (needs wrk; OLD=<worktree> adds an older commit)
bench-serving: $(STAMP)
	$(BIN)/python benchmarks/bench_serving.py $(if $(OLD),--old $(OLD) --no-shadow) --json benchmarks/serving.json

## Worker RSS under 20 concurrent 100 MB uploads (unauthenticated, and authenticated but oversized)
bench-uploads: $(STAMP)
	$(BIN)/python benchmarks/bench_uploads.py --json benchmarks/uploads.json

## Serve the production versions over REST with gunicorn (HOST=127.0.0.1, PORT=8000; SERVING_API_KEY; SERVING_MODELS=churn,...)
serve: $(STAMP)
	HOST=$(or $(HOST),127.0.0.1) PORT=$(or $(PORT),8000) $(if $(SERVING_MODELS),SERVING_MODELS='$(SERVING_MODELS)') $(BIN)/gunicorn -c serving/gunicorn.conf.py serving.app:app

## Browse the monitoring dashboards: Evidently's UI on the workspace, on 127.0.0.1 only (PORT=8001)
monitoring-ui: $(STAMP)
	DO_NOT_TRACK=1 $(BIN)/evidently ui --host 127.0.0.1 --port $(or $(PORT),8001) \
		--workspace "$$($(BIN)/python -c 'from tabular_mlops import settings; print(settings.evidently_workspace())')"

## Build the docs site into site/ (MkDocs Material; strict: a broken link fails)
docs: $(STAMP)
	$(MKDOCS) build --strict

## Serve the docs on 127.0.0.1:8002 (PORT= to change it)
docs-serve: $(STAMP)
	$(MKDOCS) serve -a 127.0.0.1:$(or $(PORT),8002)

# docs/ is also a folder: without this, `make docs` would find it up to date.
.PHONY: docs docs-serve

## Build and start the docker-compose stack (needs a Docker engine and a filled-in .env)
up:
	docker compose up -d --build

## Stop the docker-compose stack (volumes are kept)
down:
	docker compose down

## Follow the logs of the docker-compose stack
logs:
	docker compose logs -f --tail=100

## Remove generated data, reports and caches (keeps .venv)
clean:
	rm -rf data reports site .pytest_cache .ruff_cache .mypy_cache

.PHONY: help install lock demo browser test audit test-stack lint serve bench bench-home-credit bench-scoring bench-monitoring bench-challenger bench-materialize bench-chain bench-train bench-serving bench-uploads monitoring-ui up down logs clean
