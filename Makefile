# fieldcap's task runner. `./dev TARGET` runs these, installing make first where it is missing.
SHELL := /bin/sh
VENV := .venv
BIN := $(VENV)/bin
export FIELDCAP_MODEL_DIR ?= $(CURDIR)/.cache/models
SECONDS ?= 10

.PHONY: help setup setup-test demo test test-fast lint check docs bench install-size soak soak-short clean

help:
	@echo "targets: setup demo test lint check docs bench install-size soak soak-short clean"

setup:
	sh scripts/setup.sh runtime

setup-test:
	sh scripts/setup.sh test

demo: setup
	$(BIN)/fieldcap demo --seconds $(SECONDS)

lint: setup-test check

check:
	$(BIN)/ruff check agent central drivers models sync tests bench scripts
	$(BIN)/ruff format --check agent central sync
	$(BIN)/mypy

test: setup-test check
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast:
	$(BIN)/python -m pytest -q -x -p no:cacheprovider

# Regenerate the references in docs/ (CLI, config, metrics, wire) from the code.
docs: setup-test
	$(BIN)/python scripts/gen_docs.py

bench: setup-test
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Edge and central install sizes, each in a fresh virtualenv (see BENCHMARKS.md).
install-size: setup
	$(BIN)/python bench/install_size.py

soak: setup-test
	$(BIN)/python bench/soak.py --minutes 30 --faults 60

# CI's soak: every fault kind once in three minutes, every promise checked (about 4 minutes).
soak-short: setup-test
	$(BIN)/python bench/soak.py --minutes 3 --faults 10 --seed 3

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
