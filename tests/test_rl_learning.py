"""RL actually learns: on a synthetic task with a verifiable reward the tiny model improves.

The task: reply with text that starts with an upper-case letter. The random tiny model does
so about a third of the time, so the reward has signal from the first step, and a few dozen
LoRA steps are enough to move it well above that rate.
"""

from __future__ import annotations

import pytest
import torch

from agents import models
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from envs.base import Task, TextEnv
from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer


class CapitalStartEnv(TextEnv):
    """Reward 1 when the reply starts with an upper-case letter."""

    def __init__(self, split: str = "train", render_mode: str | None = None):
        tasks = [Task(f"t{i}", f"Say something about topic {i}.", ("",)) for i in range(8)]
        super().__init__(tasks, split=split, render_mode=render_mode)

    def initial_messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def respond(self, action: str):
        first = action.lstrip()[:1]
        return float(first.isalpha() and first.isupper()), True, None, {}


def _train(loss: str, kl: KLSettings, steps: int) -> list[float]:
    torch.manual_seed(0)
    tokenizer = models.load_tokenizer("tiny-random")
    config = TrainerConfig(loss=loss, lr=2e-2, lora=LoraSettings(rank=8, alpha=16), kl=kl, micro_batch_size=64)
    trainer = LoRATrainer(models.load_model("tiny-random"), config, pad_id=tokenizer.pad_token_id)
    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=64)
    driver = RolloutDriver(engine, CapitalStartEnv, RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=2)))
    tasks = driver.envs(1)[0].tasks
    rewards = []
    for step in range(steps):
        episodes = [Episode(task, None, "p0", s) for task in tasks for s in range(6)]
        trajectories = driver.run(episodes, trainer.adapter(), seed=step)
        rewards.append(sum(t.reward for t in trajectories) / len(trajectories))
        trainer.step(trajectories, [(t.prompt_id, t.task_id) for t in trajectories])
    return rewards


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "kl"),
    [("reinforce", KLSettings()), ("ema_pg", KLSettings(kind="topk", coef=0.001, topk=16, ema_period=2, ema_eta=0.9))],
)
def test_mean_reward_rises(loss: str, kl: KLSettings) -> None:
    rewards = _train(loss, kl, steps=20)
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.6, rewards  # the task is not already solved
    assert end >= start + 0.25, rewards
