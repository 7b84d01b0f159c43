"""Synthetic finished run directories, as the leaderboard reads them, for the leaderboard tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog
from espl.evolution.system_prompt import RatingPoint, SystemPrompt

BUDGET = {
    "train_rollouts": 16, "train_generated_tokens": 400, "eval_rollouts": 8, "eval_generated_tokens": 100,
    "reflector_calls": 2, "reflector_prompt_tokens": 300, "reflector_completion_tokens": 50,
    "optimizer_steps": 2, "total_generated_tokens": 550,
}


def write_run(
    root: Path, env: str, method: str, seed: int, accuracies: list[float], *, rewards: list[float] | None = None,
    budget: dict[str, int] | None = None, wall_s: float = 10.0, evolve: bool = False, pass_at: float | None = None,
    eval_size: tuple[int, int] = (4, 2), config: dict[str, Any] | None = None, evaluated: str | None = None,
) -> Path:
    """A finished run directory as `espl.run.train.run_training` leaves it (the files the leaderboard reads).

    `accuracies[i]` is the test accuracy at evaluation i, taken every 2 iterations from 0, over
    `eval_size` = (tasks, samples per task); `config` is config.json apart from method and seed.
    `evolve` logs two children of the seed prompt; the run evaluates the newest unless
    `evaluated` names another (a candidate that lost to the seed prompt leaves `p0000`).
    """
    n_tasks, per_task = eval_size
    size = {"n_tasks": n_tasks, "episodes": n_tasks * per_task, "samples_per_task": per_task}
    path = root / f"{env}--{method}--seed{seed}"
    path.mkdir(parents=True)
    rewards = rewards or [0.1 * (i + 1) for i in range(2 * (len(accuracies) - 1))]
    metrics: list[dict[str, Any]] = []
    for iteration in range(len(rewards) + 1):
        record: dict[str, Any] = {"iteration": iteration}
        if iteration:
            record["train_reward"] = rewards[iteration - 1]
        if iteration % 2 == 0:
            record["eval"] = {**size, "accuracy": accuracies[iteration // 2], "prompt_id": "p0000"}
            if pass_at is not None:
                record["eval"]["pass@1"] = pass_at
        metrics.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    eval_id = evaluated or write_prompt_log(path / "prompts.jsonl", evolve)
    if evaluated:
        write_prompt_log(path / "prompts.jsonl", evolve)
    summary = {
        "env": env, "method": method, "model": "tiny-random", "engine": "hf", "seed": seed,
        "iterations": len(rewards), "budget": budget or BUDGET, "wall_s": wall_s,
        "hardware": {"cpu": "x86_64", "cpu_count": 2, "torch": "2.13.0"}, "git_commit": "0123456789abcdef-dirty",
        "final": {**size, "accuracy": accuracies[-1], **({"pass@1": pass_at} if pass_at is not None else {})},
        "best": {**size, "accuracy": max(accuracies)}, "eval_prompt": {"id": eval_id, "principles": ["x"]},
        "population_size": 1, "prompts_created": 3 if evolve else 1,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps({"method": method, "seed": seed, **(config or {})}))
    return path


def write_prompt_log(path: Path, evolve: bool) -> str:
    """A seed prompt; when evolving, a mutation child and a crossover of the two (a DAG)."""
    population, log = Population(capacity=10), PromptLog.open(path)
    population.add(prompt("p0000", (), "seed", 0, 25.0, ["Check the arithmetic.", "Answer with a number."]))
    log.append_step(population, 0)
    if evolve:
        population.add(prompt("p0001", ("p0000",), "mutation", 1, 27.5, ["Check the arithmetic twice."]))
        log.append_step(population, 1)
        population.add(prompt("p0002", ("p0000", "p0001"), "crossover", 2, 29.0, ["Write each step.", "Box it."]))
        log.append_step(population, 2)
        return "p0002"
    return "p0000"


def prompt(pid: str, parents: tuple[str, ...], operator: str, step: int, mu: float, principles: list[str]) -> SystemPrompt:
    return SystemPrompt(pid, tuple(principles), parents, operator, step, rating_history=[RatingPoint(step, mu, 2.0, operator)])


def shared_config(env: str, **changes: Any) -> dict[str, Any]:
    """config.json apart from method and seed: one env's runs share it, as a suite's do."""
    return {"env": {"name": env, "kwargs": {}}, "eval_limit": 4, "rl": {"lr": 1e-4, "lora": {"rank": 16}}, **changes}


def write_small_suite(root: Path) -> Path:
    """gsm8k: espl (3 seeds, evolving) and rl (2 seeds); aime: base (1 seed); one unfinished run."""
    for seed, accuracies in enumerate([[0.1, 0.2], [0.1, 0.4], [0.2, 0.9]]):
        write_run(root, "gsm8k", "espl", seed, accuracies, evolve=True, pass_at=accuracies[-1] + 0.05, wall_s=10.0 + seed,
                  config=shared_config("gsm8k"))
    for seed, accuracies in enumerate([[0.1, 0.3], [0.1, 0.3]]):
        write_run(root, "gsm8k", "rl", seed, accuracies, pass_at=0.35, config=shared_config("gsm8k"))
    write_run(root, "aime", "base", 0, [0.05], budget={**BUDGET, "train_rollouts": 0}, eval_size=(3, 1),
              config=shared_config("aime", eval_limit=3))
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text("{}")
    return root


SIX_METHODS = ("base", "evolution", "gepa", "reflect", "rl", "espl")


def write_cpu_suites(root: Path) -> Path:
    """Runs shaped like the committed CPU suites, as wide as their tables get: all six methods
    x 3 seeds on `arithmetic` (24 x 2, pass@1 and pass@2, five-digit budgets, a long model id,
    two commits, an 8-GPU hardware label) and on `hotpotqa-comparison` (6 x 1, every reward 0,
    one mean off by float rounding). No evaluated prompt has a parent on hotpotqa."""
    budget = {**BUDGET, "train_rollouts": 64, "total_generated_tokens": 14654, "reflector_calls": 42,
              "reflector_prompt_tokens": 13000, "reflector_completion_tokens": 1654}
    for method in SIX_METHODS:
        for seed in range(3):
            path = write_run(
                root, "arithmetic", method, seed, [0.2 + 0.01 * seed, 0.15 + 0.02 * seed * seed],
                evolve=method in ("espl", "evolution"), pass_at=0.3 - 0.01 * seed, eval_size=(24, 2),
                budget={**budget, "reflector_prompt_tokens": 13000 + 1000 * seed}, wall_s=300.0 + 40 * seed,
                config=shared_config("arithmetic"),
            )
            summary = json.loads((path / "summary.json").read_text())
            summary["final"]["pass@2"] = 0.45 - 0.02 * seed
            summary["model"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
            summary["hardware"] = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 8, "torch": "2.11.0+cu128"}
            summary["git_commit"] = "fedcba9876543210" if seed else summary["git_commit"]
            (path / "summary.json").write_text(json.dumps(summary))
            write_run(root, "hotpotqa-comparison", method, seed, [0.0, 0.0], rewards=[0.0, -1.4e-17], eval_size=(6, 1),
                      evolve=method in ("espl", "evolution"), evaluated="p0000", wall_s=150.0 + 3 * seed,
                      budget={**BUDGET, "train_rollouts": 8}, config=shared_config("hotpotqa-comparison"))
    return root
