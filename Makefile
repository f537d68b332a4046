# Two commands on a fresh machine with Python 3.11 and make:
#   make run   — create .venv, install, serve the embedded defaults on http://127.0.0.1:8080
#   make test  — install the test dependencies and run the whole suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8080
# two pytest-xdist workers: one per core on the CI machine
PYTEST_ARGS ?= -n 2 --durations=10

BIN := $(VENV)/bin

.PHONY: run test lint typecheck services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# -qq: setuptools' notice that an editable install maps plugins/ through a meta path
# finder is information, not a problem (errors still show)
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e ".[web,ai]"
	touch $@

$(VENV)/.installed-test: pyproject.toml tests/fixtures/sc-example-plugin/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e ".[test,dev,postgres,redis,cassandra,s3,webrtc,push,ai,web,fuzz]"
	$(BIN)/python -m pip install -qq -e tests/fixtures/sc-example-plugin
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/secureconnect serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check secureconnect plugins tests bench scripts
	$(BIN)/mypy secureconnect secureconnect_plugins
	$(BIN)/lint-imports

services:
	bash scripts/services/install.sh

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
