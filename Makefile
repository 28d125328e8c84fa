# Photogenic: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo
POOL ?= sample_pool
export JAVA_HOME ?= /usr/lib/jvm/java-17-openjdk-amd64
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(abspath $(BIN)/python)
# In a checkout, Label Studio's venv and data stay in the repository as before (a pip-installed
# photogenic uses the user's cache / data dirs: annotation/server.py).
export PHOTOGENIC_LS_VENV ?= $(abspath .venv-ls)
export PHOTOGENIC_LS_DATA_DIR ?= $(abspath .cache/label-studio)

.PHONY: setup demo test test-deps bench label-studio report sample-pool clean

setup: $(STAMP)

# Exact pins in requirements.lock, installed without the resolver so nothing swaps versions
# (rapidocr asks for opencv-python; we keep only opencv-python-headless, which it works with).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(POOL)/_SUCCESS: | $(STAMP)
	$(BIN)/photogenic sample-pool $(POOL)

sample-pool: $(POOL)/_SUCCESS

demo: setup sample-pool
	bash pipeline/demo.sh $(POOL) $(RUN)

# Browser tests drive Debian's chromium (no browser downloads); root installs it when missing.
test-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: setup test-deps
	$(BIN)/python -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

# Run from the repository root as modules (bench.review reads tests' helpers).
bench: setup sample-pool
	$(BIN)/python -m bench.filters
	$(BIN)/python -m bench.selection
	$(BIN)/python -m bench.review
	$(BIN)/python -m bench.ls_client
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.summary

label-studio: setup
	$(BIN)/photogenic review server start

report: setup
	$(BIN)/photogenic report --run $(RUN)

clean:
	rm -rf runs $(POOL) .cache test-artifacts
