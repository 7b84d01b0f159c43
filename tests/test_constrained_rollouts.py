"""Constrained agent turns train like free ones: the logprobs a trajectory carries are the
unmasked policy's, so the first optimizer step's importance ratio is about 1.

A constraint masks the sampler's distribution. Had the engine reported the masked (and
renormalised) logprobs, a forced token would carry about 0 while the trainer recomputes the
model's own value (here often below -5), and every PPO-style ratio would be far from 1 where
the constraint steered. These tests run the real `hf` engine on the tiny model through the
rollout driver, with an env whose action format the untrained model never writes by itself.
"""

from __future__ import annotations

import re

import pytest
import torch

from agents import models
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from envs.base import Task, TextEnv
from espl.rl.settings import LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

ACTION = r"<answer>[a-z]{1,6}</answer>"


class TaggedAnswerEnv(TextEnv):
    """Reward 1 for an answer in tags that starts with a vowel; one turn."""

    action_regex = ACTION

    def __init__(self, split: str = "train", render_mode: str | None = None):
        tasks = [Task(f"t{i}", f"Name a word about topic {i}.", ("",)) for i in range(4)]
        super().__init__(tasks, split=split, render_mode=render_mode)

    def initial_messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def respond(self, action: str):
        match = re.fullmatch(ACTION, action.strip())
        return float(bool(match) and action.strip()[8] in "aeiou"), True, None, {}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tokenizer = models.load_tokenizer("tiny-random")
    config = TrainerConfig(loss="grpo", lr=1e-3, lora=LoraSettings(rank=8, alpha=16), micro_batch_size=64)
    trainer = LoRATrainer(models.load_model("tiny-random"), config, pad_id=tokenizer.pad_token_id)
    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=64)
    return trainer, engine


def _rollouts(engine: HFEngine, trainer: LoRATrainer, constrain: bool, seed: int):
    config = RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=16), constrain_actions=constrain)
    driver = RolloutDriver(engine, TaggedAnswerEnv, config)
    tasks = driver.envs(1)[0].tasks
    episodes = [Episode(task, None, "p0", s) for task in tasks for s in range(4)]
    return driver.run(episodes, trainer.adapter(), seed=seed)


def _texts(engine: HFEngine, trajectory) -> list[str]:
    ids = trajectory.token_ids
    return [engine.tokenizer.decode(ids[turn.start : turn.start + turn.n_sampled], skip_special_tokens=True).strip()
            for turn in trajectory.turns]


def test_constrained_turns_match_and_say_so(setup) -> None:
    trainer, engine = setup
    free = _rollouts(engine, trainer, constrain=False, seed=1)
    constrained = _rollouts(engine, trainer, constrain=True, seed=1)
    assert not any(re.fullmatch(ACTION, text) for t in free for text in _texts(engine, t))
    assert all(not turn.constrained for t in free for turn in t.turns)
    for trajectory in constrained:
        (turn,) = trajectory.turns
        (text,) = _texts(engine, trajectory)
        assert turn.constrained and re.fullmatch(ACTION, text), text


def test_constrained_logprobs_are_what_the_trainer_recomputes(setup) -> None:
    """Every policy token's logprob equals the trainer's own, also for tokens the constraint
    forced against the model (where a masked report would read about 0)."""
    trainer, engine = setup
    trajectories = _rollouts(engine, trainer, constrain=True, seed=2)
    recomputed = trainer._recompute_old_logprobs(trajectories)
    lowest = 0.0
    for trajectory, values in zip(trajectories, recomputed):
        for position, sampled in enumerate(trajectory.logprobs):
            if trajectory.loss_mask[position]:
                assert abs(values[position] - sampled) < 1e-3, (position, values[position], sampled)
                lowest = min(lowest, values[position])
    assert lowest < -3.0, "the constraint never forced an unlikely token: the check would be vacuous"


def test_first_step_ratio_is_one_on_constrained_rollouts(setup) -> None:
    """GRPO's first step on constrained rollouts (engine old logprobs): ratio 1, nothing clipped."""
    trainer, engine = setup
    for seed in range(3, 10):  # until a batch has a group with mixed rewards
        trajectories = _rollouts(engine, trainer, constrain=True, seed=seed)
        stats = trainer.step(trajectories, [(t.prompt_id, t.task_id) for t in trajectories])
        if not stats.get("skipped"):
            break
    assert not stats.get("skipped"), "no group had mixed rewards"
    assert abs(stats["ratio_mean"] - 1.0) < 1e-3 and abs(stats["ratio_max"] - 1.0) < 1e-2
    assert abs(stats["ratio_min"] - 1.0) < 1e-2 and stats["clip_fraction"] == 0.0
