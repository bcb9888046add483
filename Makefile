# The README's commands. `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
# `mlflow run` files its run under this experiment (the DESIGN name), not "Default".
export MLFLOW_EXPERIMENT_NAME ?= mammo-mass-calc
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test test-fast lint ui bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,team]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	mlflow run . -e train --env-manager local

test: setup
	python -m pytest $(PYTEST_ARGS)

test-fast: setup  # the edit loop: everything but the tests that train a model or start a server (`slow`)
	python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	ruff check mammo entrypoints tests bench && ruff format --check mammo entrypoints tests bench

ui: setup  # MLflow's GenAI job runner (7 helper processes) is off: nothing here uses it
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///mlflow.db

bench: setup  # model5 training img/s per precision policy (on a GPU: KERAS_BACKEND=jax, larger --images), then through the pipeline
	python -m bench.gpu_throughput --images 256 --epochs 1 --policies float32,mixed_bfloat16  # CPU-sized; see docs/performance.md
	python -m bench.train_throughput --epochs 4  # real pipeline: one iterator vs one per epoch
