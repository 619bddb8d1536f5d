# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint stack-up stack-down stack-status bench clean

$(BIN)/fleetstream: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/fleetstream

demo: install
	$(BIN)/fleetstream demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/fleetstream stack up
	$(BIN)/fleetstream topics
	$(BIN)/pytest

stack-up: install
	$(BIN)/fleetstream stack up

stack-down: install
	$(BIN)/fleetstream stack down

stack-status: install
	$(BIN)/fleetstream stack status
