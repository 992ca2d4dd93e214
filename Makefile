# ditjax: everything runs inside a project-local virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_run
CKPT ?=
VAE ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test lint format demo sample clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests configs
	$(BIN)/ruff format --check src tests configs

format: $(STAMP)
	$(BIN)/ruff check --fix src tests configs
	$(BIN)/ruff format src tests configs

clean:
	rm -rf $(VENV) $(DEMO_DIR)
