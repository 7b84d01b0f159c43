"""`espl-bench eval`: accuracy and pass@k of a model on the first N test tasks of an env."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="env id or alias (see `espl-bench envs`)")
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    parser.add_argument("--engine", default="hf", help="a registered engine: hf | vllm | openai")
    parser.add_argument("--base-url", action="append", default=[], help="OpenAI-compatible endpoint (repeatable)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n-samples", type=int, default=1, help="samples per task (k of pass@k)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks of the split")
    parser.add_argument("--temperature", type=float, default=None, help="default: 0 with one sample, else 1")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=512, help="new tokens per agent turn")
    parser.add_argument("--system-prompt", default=None, help="system prompt text, or @file")
    parser.add_argument("--placement", default="system", choices=["system", "user"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="rollouts JSONL (default: runs/eval/<env>--<model>.jsonl)")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from agents.models import ModelUnavailable
    from agents.rollout import RolloutDriver
    from espl.config import ConfigError, load_config
    from espl.run.builder import build_policy, env_factory
    from espl.run.evaluation import evaluate
    from espl.run.plan import plan_run

    console = Console()
    system_prompt = args.system_prompt
    if system_prompt and system_prompt.startswith("@"):
        system_prompt = Path(system_prompt[1:]).read_text()
    temperature = args.temperature if args.temperature is not None else (0.0 if args.n_samples == 1 else 1.0)
    settings = {
        "method": "base", "seed": args.seed, "eval_temperature": temperature,
        "env": {"name": args.env, "test_split": args.split},
        "policy": {"model": args.model, "engine": args.engine, "base_urls": args.base_url, "top_p": args.top_p,
                   "max_tokens": args.max_tokens, "placement": args.placement,
                   "max_total_tokens": max(4096, 2 * args.max_tokens)},
    }
    try:
        plan = plan_run(load_config(None, base=settings))
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    env_id = plan.env_id
    try:
        engine = build_policy(plan, adapter_dir="").engine
        driver = RolloutDriver(engine, env_factory(plan, args.split, engine.tokenizer), plan.eval_rollout)
    except ModelUnavailable as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    tasks = driver.envs(1)[0].tasks[: args.limit]
    total = len(tasks) * args.n_samples
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console,
    ) as bar:
        job = bar.add_task(f"eval {env_id}", total=total)
        result = evaluate(
            driver, tasks, n_samples=args.n_samples, system_prompt=system_prompt,
            batch_size=args.batch_size, seed=args.seed, progress=lambda done: bar.update(job, completed=done),
        )
    out = args.out or Path("runs") / "eval" / f"{env_id.replace('/', '_')}--{Path(args.model).name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for trajectory in result.trajectories:
            handle.write(json.dumps(trajectory.to_record()) + "\n")
    console.print_json(data={"env": env_id, "model": args.model, "engine": args.engine, **result.metrics})
    console.print(f"rollouts: {out}")
    engine.close()
    return 0
