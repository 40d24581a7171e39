# Two entry points for a fresh machine: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_STAMP := .cache/models/.fetched
export PATH := $(abspath $(BIN)):$(PATH)
# Stages and tests run from the project root, which is how `pipeline`, `stages` and `ldeq` are found.
export PYTHONPATH := $(CURDIR)

.PHONY: setup models demo test test-review lint clean-demo

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

# The review round trip against a real Label Studio (own venv under .cache/, installed on first use; minutes).
# WFLWV_RECORD_FIXTURES=1 make test-review re-records tests/fixtures/review/labelstudio_export.json.
test-review: setup
	$(BIN)/python -m pytest -q -m labelstudio tests/pipeline/test_review_labelstudio.py

clean-demo:
	rm -rf data manifests/*.parquet models metrics plots report
