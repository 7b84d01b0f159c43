#!/usr/bin/env bash
# The GPU device check (benchmarks/gpu/check.py): LoRA training steps and hf-engine decoding on
# a random Qwen2.5-7B, one JSON summary line on stdout. `--dry-run` runs it on the CPU with a
# scaled-down model. Needs torch, transformers and peft only; nothing is downloaded.
#   benchmarks/gpu/check.sh [--dry-run] [--bandwidth-gbs N]
# PYTHON picks the interpreter (default: .venv/bin/python if there, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu.check "$@"
