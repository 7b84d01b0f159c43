"""One LoRA trainer step on a tiny Llama with a 152,064-token vocabulary, and its peak memory.

Run once per measurement, in a fresh process, so that `ru_maxrss` (the process's peak RSS)
belongs to this step alone: the figure is the peak during the step minus the RSS just before
it. The model is built from a config with random weights and the token ids are random: memory
does not depend on their values. `--source` puts another checkout of the project first on
the import path, to measure older code with the same workload.

    python benchmarks/workers/trainer_memory.py --sequences 4 [--kl topk] [--source DIR]

Prints one JSON line: the policy tokens, the RSS before the step and the step's peak growth.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

VOCAB = 152_064
"""Qwen2.5's vocabulary: its logits, not the tiny model's layers, dominate the step's memory."""
PROMPT_TOKENS = 64
POLICY_TOKENS = 2048
"""Policy tokens per sequence: 1, 2 and 4 sequences give 2k, 4k and 8k."""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, required=True)
    parser.add_argument("--kl", choices=("none", "k3", "topk"), default="none")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[2]))
    args = parser.parse_args()
    sys.path.insert(0, args.source)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents.trajectory import Trajectory
    from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    options = {"gradient_checkpointing": True} if args.gradient_checkpointing else {}
    trainer_config = TrainerConfig(loss="reinforce", advantage_mode="none", micro_batch_size=args.sequences,
                                   lora=LoraSettings(rank=8, alpha=16), kl=KLSettings(kind=args.kl, topk=32),
                                   **options)
    trainer = LoRATrainer(model, trainer_config)
    prompt = torch.randint(0, VOCAB, (PROMPT_TOKENS,)).tolist()  # one group: the prompt is shared
    trajectories = []
    for k in range(args.sequences):
        t = Trajectory("synthetic", "task0", "p0", k)
        t.append_prompt(prompt)
        t.append_sampled(torch.randint(0, VOCAB, (POLICY_TOKENS,)).tolist(), [-11.9] * POLICY_TOKENS)
        t.reward = 1.0
        trajectories.append(t)
    before = _current_rss_bytes()
    stats = trainer.step(trajectories, [("p0", "task0")] * args.sequences)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({
        "policy_tokens": args.sequences * POLICY_TOKENS, "rss_before_bytes": before,
        "step_peak_growth_bytes": max(peak - before, 0), "update_s": stats["update_s"],
        "torch_threads": torch.get_num_threads(), "source": args.source,
    }))
    return 0


def _current_rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    raise SystemExit(main())
