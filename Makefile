# Two commands on a fresh machine: `make demo` (the main job on the embedded MNIST subset)
# and `make test` (lint, types, docs, the wheel, then the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch; set TORCH=torch (or another pin) for a CUDA machine.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
SOURCES := src tests benchmarks examples

.PHONY: demo test lint types docs wheel pytest bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/advpnml demo

test: lint types docs wheel pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

types: $(BIN)/.installed
	$(BIN)/mypy

docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

wheel: $(BIN)/.installed
	TORCH="$(TORCH)" scripts/check_wheel.sh $(BIN)/python

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs site .pytest_cache .mypy_cache .ruff_cache .hypothesis
