# imgpipe: `make run` sets everything up on a fresh machine and trains on the demo data;
# `make test` sets up and runs the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup run test test-fast repro clean chromium

setup: $(INSTALLED)

# re-installs whenever pyproject.toml changes
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imgpipe needs Python 3.11 or newer")'
	@echo "imgpipe setup: installing imgpipe and its dependencies (TensorFlow, Keras, Prefect, DVC, Great Expectations,"
	@echo "  ONNX Runtime, OpenVINO, pytest; about 3 GB) into $(VENV)/; a few minutes the first time, then only when"
	@echo "  pyproject.toml changes. Nothing is installed outside $(VENV)/."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# setuptools warns that an editable install may be shadowed by same-named folders: here that is the point
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-e ".[test]"
	@touch $(INSTALLED)
	@echo "imgpipe setup: done ($$($(BIN)/imgpipe --version)); commands are in $(BIN)/ (imgpipe, dvc, prefect)"

# --commit: the run's dvc.lock (with params.yaml and the .dvc files) is committed, so that the clone is clean after it
# and `dvc metrics diff`, `dvc plots diff` and `dvc exp show` have a revision to compare the next run against
run: setup
	$(BIN)/imgpipe run --commit

# -n auto: a worker per core (pytest-xdist, at most 4); --dist loadfile: a module's tests run in order on one worker,
# since a module's tests may share one trained project
test: setup chromium
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist loadfile --durations=20

# the inner loop: everything but the tests marked slow (whole pipelines, training; tests/conftest.py SLOW_TESTS),
# under 2 minutes on 2 cores; `make test` (and CI) runs them all
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -n auto --maxprocesses=4 --dist loadfile --durations=10

# Debian's chromium, for the one test that opens the run report in a headless browser (that it renders, with no
# external reference); when it cannot be installed (not root, no apt-get, no network) that test skips and the
# others run. `make test IMGPIPE_NO_CHROMIUM=1` never installs it.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ -n "$(IMGPIPE_NO_CHROMIUM)" ]; then echo "no chromium (IMGPIPE_NO_CHROMIUM set): the report's browser test will skip"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make test: installing Debian's chromium and fonts-liberation system-wide (apt-get, as root) for the one test"; \
		echo "  that opens the run report in a headless browser; skip this with: make test IMGPIPE_NO_CHROMIUM=1"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-liberation >/dev/null) || echo "could not install chromium; the report's browser test will skip"; \
	else echo "no chromium, and installing it needs root and apt-get; the report's browser test will skip"; fi

# the same stages straight through DVC, without Prefect
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

clean:
	rm -rf $(VENV) .pytest_cache
