"""The GPU device check: the trainer's memory and step time and the `hf` engine's decode speed
on a randomly initialised Qwen2.5-7B, as one JSON line.

Built for a lent GPU machine with torch, transformers and peft but no network, no model hub
and no vLLM: the model is drawn from the shipped config on the device in bf16, the tokenizer is
made offline (`random_model`), and only this repository's trainer and engine run on it.

- Training: `LoRATrainer` with LoRA r=32 on all seven linear projections, gradient
  checkpointing asked for, one micro-batch of 4 sequences x 2048 tokens (distinct prompts of
  256 tokens, 1792 policy tokens each); one warm-up step, then timed steps between CUDA
  synchronisations; the peak of `torch.cuda.max_memory_allocated` over them.
- Decoding: `HFEngine` sampling from the trainer's live adapter (and from the base weights),
  64 distinct 512-token prompts. Two calls that differ only in `max_tokens` (16 and 272) give
  the decode rate without the prefill: extra tokens / extra seconds, compared with the
  memory-bandwidth bound (`bound`).

`--dry-run` runs the same code on the CPU with a scaled-down model of the same architecture in
fp32 and smaller shapes (decode batch 16), in under a minute on two cores. Progress goes to
stderr; the exit status is non-zero if any phase failed, and the summary line then names the
failures.

    benchmarks/gpu/check.sh            # on the GPU machine
    benchmarks/gpu/check.sh --dry-run  # anywhere
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

from agents.engine import Adapter, SamplingParams
from agents.engines.hf import HFEngine
from agents.trajectory import Trajectory
from benchmarks.gpu.bound import bound_report, known_bandwidth_gbs
from benchmarks.gpu.random_model import FULL_CONFIG, build_model, describe, load_config, word_tokenizer
from espl.rl.settings import LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

T = TypeVar("T")
GIB = 2**30


@dataclass(frozen=True)
class Shapes:
    """How much work each phase does."""

    train_sequences: int
    train_tokens: int
    train_prompt_tokens: int
    warmup_steps: int
    timed_steps: int
    decode_batch: int
    decode_prompt_tokens: int
    decode_lead_tokens: int
    decode_timed_tokens: int


GPU_SHAPES = Shapes(4, 2048, 256, 1, 3, 64, 512, 16, 256)
DRY_RUN_SHAPES = Shapes(4, 128, 32, 1, 1, 16, 32, 4, 12)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.dry_run:
        device, dtype = torch.device("cpu"), torch.float32
    elif torch.cuda.is_available():
        device, dtype = torch.device("cuda", torch.cuda.current_device()), torch.bfloat16
    else:
        print("no CUDA device: run the check on a GPU machine, or with --dry-run", file=sys.stderr)
        return 2
    shapes = DRY_RUN_SHAPES if args.dry_run else GPU_SHAPES
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu})"
    bandwidth = args.bandwidth_gbs if args.bandwidth_gbs is not None else known_bandwidth_gbs(name)
    summary: dict[str, Any] = {"check": "gpu", "dry_run": args.dry_run, "device": name, **versions(),
                               "config": FULL_CONFIG.name + (" (scaled down)" if args.dry_run else ""),
                               "shapes": asdict(shapes)}
    errors: list[str] = []

    progress(f"building the model on {name} in {dtype}")
    config = load_config(dry_run=args.dry_run)
    model, build_s = timed(lambda: build_model(config, device=device, dtype=dtype), device)
    tokenizer = word_tokenizer(config)
    summary["model"] = {**describe(model), "build_s": round(build_s, 2), **memory(device, "weights")}
    settings = trainer_config(shapes, on_gpu=device.type == "cuda")
    trainer = LoRATrainer(model, settings, pad_id=tokenizer.pad_token_id, seed=0)

    progress("training steps")
    summary["train"] = run_phase("train", errors, lambda: measure_training(trainer, shapes, device))
    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()  # a failed step's tensors go before decoding needs the memory
    if device.type == "cuda":
        torch.cuda.empty_cache()

    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=shapes.decode_batch, turn_cache_bytes=0)
    for label, adapter in (("decode", trainer.adapter()), ("decode_base", None)):
        progress(f"{label}: batch {shapes.decode_batch}")
        summary[label] = run_phase(label, errors, lambda: measure_decoding(engine, adapter, shapes, device, bandwidth))

    train, decode = summary.get("train") or {}, summary.get("decode") or {}
    bound = decode.get("bound") or {}
    summary.update(
        peak_memory_gib=train.get("peak_memory_gib"), step_s=train.get("step_s"),
        tokens_per_s=decode.get("tokens_per_s"), bound_tokens_per_s=bound.get("bound_tokens_per_s"),
        fraction_of_bound=bound.get("fraction_of_bound"),
        ok=not errors, errors=errors, wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(summary, allow_nan=False), flush=True)
    return 0 if not errors else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, scaled-down model, fp32: checks the code path")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="device memory bandwidth for the decode bound (default: known for H200 and H100)")
    return parser.parse_args(argv)


def trainer_config(shapes: Shapes, *, on_gpu: bool) -> TrainerConfig:
    """E-SPL's LoRA (r=32, alpha 64, all seven projections); bf16 autocast over bf16 weights on
    the GPU, fp32 on the CPU; the whole batch is one micro-batch."""
    return TrainerConfig(lr=4e-5, micro_batch_size=shapes.train_sequences, bf16=on_gpu,
                         gradient_checkpointing=True, lora=LoraSettings(rank=32, alpha=64))


def measure_training(trainer: LoRATrainer, shapes: Shapes, device: torch.device) -> dict[str, Any]:
    batch = training_batch(trainer.model.config.vocab_size, shapes)
    keys = ["group"] * len(batch)
    lora = list(trainer.parameters)
    base = trainer.model.get_base_model()
    out: dict[str, Any] = {
        "sequences": shapes.train_sequences, "tokens_per_sequence": shapes.train_tokens,
        "policy_tokens_per_sequence": shapes.train_tokens - shapes.train_prompt_tokens,
        "lora_rank": trainer.config.lora.rank, "lora_targets": list(trainer.config.lora.target_modules),
        "lora_parameters_m": round(sum(p.numel() for p in lora) / 1e6, 2),
        "lora_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in lora}),
        "autocast_bf16": trainer.config.bf16,
        "gradient_checkpointing_requested": trainer.config.gradient_checkpointing,
        "gradient_checkpointing_active": bool(getattr(base, "is_gradient_checkpointing", False)),
    }
    reset_peak(device)
    if out["gradient_checkpointing_requested"] and not out["gradient_checkpointing_active"]:
        progress("gradient checkpointing was asked for, but the trainer left it off on the model")
    for _ in range(shapes.warmup_steps):
        stats, warmup_s = timed(lambda: trainer.step(batch, keys), device)
        out["warmup_s"] = round(warmup_s, 3)
    seconds = []
    for _ in range(shapes.timed_steps):
        stats, step_s = timed(lambda: trainer.step(batch, keys), device)
        seconds.append(step_s)
        if not all(math.isfinite(stats[key]) for key in ("loss", "grad_norm") if key in stats):
            raise FloatingPointError(f"a training step gave non-finite stats: {stats}")
    step_s = statistics.median(seconds)
    out.update(step_s=round(step_s, 4), steps_s=[round(s, 4) for s in seconds],
               train_tokens_per_s=round(shapes.train_sequences * shapes.train_tokens / step_s, 1),
               stats={k: round(v, 6) for k, v in stats.items()}, **peak(device))
    return out


def training_batch(vocab_size: int, shapes: Shapes) -> list[Trajectory]:
    """Sequences of random ids with distinct prompts (so every token goes through the model)
    and rewards 1, 0, 1, 0 (one group, every sample kept). The sampling logprobs are the
    uniform distribution's, near what a freshly initialised model gives."""
    generator = torch.Generator().manual_seed(1)
    uniform = -math.log(vocab_size)
    batch = []
    for row in range(shapes.train_sequences):
        ids = torch.randint(0, vocab_size - 1, (shapes.train_tokens,), generator=generator).tolist()
        trajectory = Trajectory(env_id="gpu-check", task_id=f"row{row}")
        trajectory.append_prompt(ids[: shapes.train_prompt_tokens])
        sampled = ids[shapes.train_prompt_tokens :]
        trajectory.append_sampled(sampled, [uniform] * len(sampled))
        trajectory.reward = float(row % 2 == 0)
        batch.append(trajectory)
    return batch


def measure_decoding(engine: HFEngine, adapter: Adapter | None, shapes: Shapes, device: torch.device,
                     bandwidth_gbs: float | None) -> dict[str, Any]:
    vocab = engine.model.config.vocab_size
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, vocab - 1, (shapes.decode_prompt_tokens,), generator=generator).tolist()
               for _ in range(shapes.decode_batch)]

    def generate(max_tokens: int) -> list[Any]:
        completions = [c for row in engine.generate(prompts, SamplingParams(max_tokens=max_tokens, seed=3), adapter)
                       for c in row]
        failed = [c.error for c in completions if not c.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(completions)} completions failed: {failed[0]}")
        return completions

    generate(2)  # warm-up: kernels and allocator
    reset_peak(device)
    short, short_s = timed(lambda: generate(shapes.decode_lead_tokens), device)
    long, long_s = timed(lambda: generate(shapes.decode_lead_tokens + shapes.decode_timed_tokens), device)
    short_tokens, long_tokens = (sum(len(c.token_ids) for c in calls) for calls in (short, long))
    rate = (long_tokens - short_tokens) / (long_s - short_s)
    mean_context = shapes.decode_prompt_tokens + shapes.decode_lead_tokens + shapes.decode_timed_tokens / 2
    return {
        "adapter": None if adapter is None else adapter.name, "batch": shapes.decode_batch,
        "prompt_tokens": shapes.decode_prompt_tokens, "timed_steps": shapes.decode_timed_tokens,
        "tokens_per_s": round(rate, 1), "calls_s": [round(short_s, 3), round(long_s, 3)],
        "tokens": [short_tokens, long_tokens], "end_to_end_tokens_per_s": round(long_tokens / long_s, 1),
        "rows_ended_early": sum(c.finish_reason != "length" for c in long),
        "bound": bound_report(engine.model, batch=shapes.decode_batch, mean_context=mean_context,
                              with_lora=adapter is not None, bandwidth_gbs=bandwidth_gbs, measured_tokens_per_s=rate),
        **peak(device),
    }


def run_phase(label: str, errors: list[str], phase: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """A phase's report, or None with its failure recorded (the next phase still runs)."""
    try:
        return phase()
    except Exception as error:  # noqa: BLE001 - the summary names every failure; the exit status fails
        errors.append(f"{label}: {type(error).__name__}: {error}"[:2000])
        progress(f"{label} failed: {error!r}")
        return None


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """`work()` and its wall time, the device's queued kernels finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> dict[str, float | None]:
    """The device's peak allocated memory since the last reset (None on the CPU), and the
    process's peak resident memory so far."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    gpu = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    reserved = torch.cuda.max_memory_reserved(device) / GIB if device.type == "cuda" else None
    return {"peak_memory_gib": _round(gpu), "peak_reserved_gib": _round(reserved), "peak_rss_gib": _round(rss)}


def memory(device: torch.device, label: str) -> dict[str, float | None]:
    allocated = torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None
    return {f"{label}_memory_gib": _round(allocated)}


def versions() -> dict[str, str | None]:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "peft": peft.__version__}


def progress(message: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


if __name__ == "__main__":
    sys.exit(main())
