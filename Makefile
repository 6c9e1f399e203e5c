# Two set-up commands: `make run` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints one harmless "Location ... is ignored" line per local mirror entry; keep logs readable.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := true
export KEDRO_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
PYTEST_ARGS ?=

.PHONY: install run test lint viz mlflow clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 $(QUIET_PIP)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 -r requirements.txt $(QUIET_PIP)
	$(BIN)/pip install --quiet --no-deps -e . $(QUIET_PIP)
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

viz: $(STAMP)
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data/0*/* data/lineage/* mlruns mlflow.db .viz
