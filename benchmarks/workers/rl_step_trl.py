"""The other side of the comparison: TRL's `GRPOTrainer` on the same workload, as a worker.

The generation batch is 8 prompts x 4 generations = 32 sequences, trained as 4 micro-batches
of 8 with one optimizer step (`per_device_train_batch_size=8`, `gradient_accumulation_steps=4`,
so `steps_per_generation=4`). No reference model (`beta=0`), no vLLM, fp32, no gradient
checkpointing unless `--gradient-checkpointing` (TRL's own default is on; ours never
checkpoints). A callback holds the trainer at the start of every optimizer step until the
driver sends ``step``, and reports the step when the trainer comes back to that point, so a
step's time covers generation, reward, loss, backward, the optimizer and TRL's logging.

    python benchmarks/workers/rl_step_trl.py --steps 4   # then send 4 "step" lines and "stop"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.workers.protocol import Channel, memory_fields  # noqa: E402
from benchmarks.workers.workload import MODEL, MathReward, Workload, current_workload, step_tasks, tasks  # noqa: E402


def build_dataset(all_tasks: list[Any], steps: int, workload: Workload) -> Any:
    """One row per prompt, in the order our side uses them; `task_index` feeds the reward."""
    from datasets import Dataset

    from envs import registry

    env = registry.make("gsm8k")
    chosen = [task for step in range(steps) for task in step_tasks(all_tasks, step, workload)]
    index = {id(task): i for i, task in enumerate(all_tasks)}
    return Dataset.from_list(
        [{"prompt": env.initial_messages(task), "task_index": index[id(task)]} for task in chosen]
    )


def make_gate(channel: Channel) -> Any:
    from transformers import TrainerCallback

    class StepGate(TrainerCallback):
        """Runs one optimizer step per ``step`` command and reports it."""

        def __init__(self) -> None:
            self.started: float | None = None
            self.step = 0
            self.logs: dict[str, float] = {}

        def _report(self) -> None:
            if self.started is None:
                return
            logs = self.logs
            channel.send(
                "step",
                step=self.step,
                seconds=round(time.perf_counter() - self.started, 3),
                completion_tokens=round(logs.get("completions/mean_length", float("nan")) * current_workload().sequences, 1),
                reward_mean=logs.get("reward"),
            )
            self.started, self.logs = None, {}
            self.step += 1

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report()
            if channel.next_command() != "step":
                channel.send("done", side="trl", steps=self.step, **memory_fields())
                os._exit(0)
            self.started = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
            if logs and "reward" in logs:
                self.logs = dict(logs)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report()

    return StepGate()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps the driver will ask for")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    options = parser.parse_args()
    channel = Channel()
    workload = current_workload()
    started = time.perf_counter()
    import torch
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import load_model, load_tokenizer

    torch.manual_seed(0)
    all_tasks = tasks()
    reward = MathReward()

    def gsm8k_reward(completions: list[Any], task_index: list[int], **kwargs: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward([all_tasks[i] for i in task_index], texts)

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-grpo-bench-"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=options.gradient_checkpointing,
        learning_rate=workload.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=workload.betas[0],
        adam_beta2=workload.betas[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        per_device_train_batch_size=workload.micro_batch_size,
        gradient_accumulation_steps=workload.sequences // workload.micro_batch_size,
        num_generations=workload.generations,
        max_completion_length=workload.new_tokens,
        temperature=workload.temperature,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        use_vllm=False,
        shuffle_dataset=False,
        max_steps=options.steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        log_completions=False,
        seed=0,
    )
    peft_config = LoraConfig(
        r=workload.lora_rank,
        lora_alpha=workload.lora_alpha,
        lora_dropout=0.0,
        target_modules=workload.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = GRPOTrainer(
        model=load_model(MODEL, dtype="float32"),
        reward_funcs=gsm8k_reward,
        args=config,
        train_dataset=build_dataset(all_tasks, options.steps, workload),
        processing_class=load_tokenizer(MODEL),
        peft_config=peft_config,
        callbacks=[make_gate(channel)],
    )
    if config.generation_batch_size != workload.sequences:
        raise RuntimeError(f"TRL generation batch is {config.generation_batch_size}, expected {workload.sequences}")
    channel.send("ready", side="trl", load_s=round(time.perf_counter() - started, 2),
                 torch_threads=torch.get_num_threads(), **memory_fields())
    trainer.train()
    if channel.next_command() != "stop":
        raise RuntimeError("the driver asked for more steps than --steps")
    channel.send("done", side="trl", steps=options.steps, **memory_fields())
    return 0


if __name__ == "__main__":
    sys.exit(main())
