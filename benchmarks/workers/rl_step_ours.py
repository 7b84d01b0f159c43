"""One side of the TRL comparison: our RL iteration (rollout + LoRA GRPO update) as a worker.

Rollout: `RolloutDriver` over the `hf` engine that samples from the trainer's own peft model;
update: `LoRATrainer.step` on those trajectories. Speaks the `protocol` line protocol.

    python benchmarks/workers/rl_step_ours.py   # then send "step" / "stop" lines
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.workers.protocol import Channel, memory_fields  # noqa: E402
from benchmarks.workers.workload import ENV, MODEL, current_workload, step_tasks, tasks  # noqa: E402


def main() -> int:
    channel = Channel()
    workload = current_workload()
    started = time.perf_counter()
    import torch

    from agents.engine import SamplingParams
    from agents.engines.hf import HFEngine
    from agents.models import load_model, load_tokenizer
    from agents.rollout import Episode, RolloutConfig, RolloutDriver
    from envs import registry
    from espl.rl.settings import LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(MODEL)
    config = TrainerConfig(
        loss="grpo",
        lr=workload.learning_rate,
        betas=workload.betas,
        lora=LoraSettings(rank=workload.lora_rank, alpha=workload.lora_alpha, target_modules=workload.target_modules),
        micro_batch_size=workload.micro_batch_size,
        temperature=workload.temperature,
    )
    trainer = LoRATrainer(load_model(MODEL, dtype="float32"), config, pad_id=tokenizer.pad_token_id or 0)
    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=workload.sequences)
    sampling = SamplingParams(temperature=workload.temperature, max_tokens=workload.new_tokens)
    driver = RolloutDriver(engine, lambda: registry.make(ENV), RolloutConfig(sampling=sampling))
    all_tasks = tasks()
    driver.envs(workload.sequences)  # build the env pool before the first timed step
    channel.send("ready", side="ours", load_s=round(time.perf_counter() - started, 2),
                 torch_threads=torch.get_num_threads(), **memory_fields())

    step = 0
    for command in channel.commands():
        if command == "stop":
            break
        started = time.perf_counter()
        episodes = [
            Episode(task, None, "p0", sample)
            for task in step_tasks(all_tasks, step, workload)
            for sample in range(workload.generations)
        ]
        trajectories = driver.run(episodes, trainer.adapter(), seed=step)
        rollout_s = time.perf_counter() - started
        stats = trainer.step(trajectories, [(t.prompt_id, t.task_id) for t in trajectories])
        channel.send(
            "step",
            step=step,
            seconds=round(time.perf_counter() - started, 3),
            rollout_s=round(rollout_s, 3),
            update_s=round(stats["update_s"], 3),
            completion_tokens=sum(t.n_sampled for t in trajectories),
            reward_mean=stats["reward_mean"],
            errors=sum(t.error is not None for t in trajectories),
        )
        step += 1
    channel.send("done", side="ours", steps=step, **memory_fields())
    return 0


if __name__ == "__main__":
    sys.exit(main())
