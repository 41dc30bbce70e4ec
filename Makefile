# imgpipe: `make run` sets everything up on a fresh machine and trains on the demo data;
# `make test` sets up and runs the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test repro clean

setup: $(INSTALLED)

# re-installs whenever pyproject.toml changes
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imgpipe needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

run: setup
	$(BIN)/imgpipe run

test: setup
	$(BIN)/python -m pytest

# the same stages straight through DVC, without Prefect
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

clean:
	rm -rf $(VENV) .pytest_cache
