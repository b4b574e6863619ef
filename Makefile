# Two commands on a fresh machine: `make demo` (the main job on the embedded MNIST subset)
# and `make test` (the test suite). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch; set TORCH=torch (or another pin) for a CUDA machine.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/advpnml demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
