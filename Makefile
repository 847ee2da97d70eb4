# Set-up and entry points. `make study` runs the whole study, `make test` runs the tests.
# Both create the virtual environment when missing and are no-ops for what is already done.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.urnet-installed
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
STUDY_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help study smoke test test-all data venv

help:
	@echo "make study   # install what is missing, fetch Fashion-MNIST, run the study, write reports/"
	@echo "make test    # install what is missing, run the test suite (smoke runs of every notebook)"
	@echo "make smoke   # the study at smoke scale (digits, minutes)"
	@echo "make test-all  # also the slow studies and benchmarks"

venv: $(STAMP)

# The stamp is rebuilt only when the dependency files change.
$(STAMP): requirements.txt requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "Could not create $(VENV): install Python 3.11 with venv (apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt -c requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name urnet --display-name "Python (urnet)"
	@touch $@

# Fashion-MNIST IDX files: $URNET_DATA when set, else Debian's dataset-fashion-mnist package.
data:
	@if [ -n "$$URNET_DATA" ]; then \
	  test -f "$$URNET_DATA/train-images-idx3-ubyte.gz" -o -f "$$URNET_DATA/train-images-idx3-ubyte" || { \
	    echo "URNET_DATA=$$URNET_DATA holds no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] ...)"; exit 1; }; \
	elif [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get install -y dataset-fashion-mnist || { sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist; }; \
	else \
	  echo "Fashion-MNIST is missing. Either run: sudo apt-get install dataset-fashion-mnist"; \
	  echo "or download the four IDX files and: export URNET_DATA=/path/to/them"; exit 1; \
	fi

study: $(STAMP) data
	$(VENV)/bin/urnet study $(STUDY_ARGS)

smoke: $(STAMP)
	$(VENV)/bin/urnet study --smoke $(STUDY_ARGS)

# The tests use Fashion-MNIST when it can be installed and skip those cases otherwise.
test: $(STAMP)
	@$(MAKE) --no-print-directory data || echo "Fashion-MNIST unavailable: the tests that need it will be skipped"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "" $(PYTEST_ARGS)
