# Two entry points for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_STAMP := .cache/models/.fetched
export PATH := $(abspath $(BIN)):$(PATH)
# Stages and tests run from the project root, which is how `pipeline`, `stages` and `ldeq` are found.
export PYTHONPATH := $(CURDIR)

.PHONY: setup models demo test lint clean-demo

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	touch $(STAMP)

$(MODELS_STAMP): $(STAMP) pipeline/models_store.py
	$(BIN)/python -m pipeline.models_store fetch
	touch $(MODELS_STAMP)

setup: $(STAMP) $(MODELS_STAMP)

models: $(MODELS_STAMP)

demo: setup
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.inspect summary

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf data manifests/*.parquet models metrics plots report
