"""Fixed-seed reference runs of every method, recorded once and replayed by `test_golden_runs`.

A redesign must keep behaviour: each scenario below runs one method on one env with the
`tiny-random` model and the smoke budget, and what the run writes (metrics without wall-clock
figures, the prompt log, every rollout's token ids, the summary's scores) is compared with the
records in `tests/data/golden/`. Where a deliberate fix changes a record, `test_golden_runs`
names the fix.

Besides the real `arithmetic` and `hotpotqa` envs, a `coin` scenario makes every part turn:
a tiny random model scores 0 on real tasks, so nothing trains and nothing evolves. The coin
env rewards a reply of even length (about half of random replies), and a scripted reflector
engine (`golden-reflector`, registered as any third-party engine would be) answers every
operator stage with valid edits, so RL steps, TrueSkill matches between distinct prompts,
mutation and crossover children, and selection from a growing window all happen.

Re-record (only when a change is meant to alter behaviour, and say so in the commit):

    .venv/bin/python tests/golden_runs.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.engine import Adapter, Completion, SamplingParams
from agents.engines import register_engine
from envs import Task, TextEnv, register

RECORDS = Path(__file__).resolve().parent / "data" / "golden"
METHODS = ("espl", "rl", "evolution", "reflect", "base", "gepa")
ENVS = ("arithmetic", "hotpotqa", "coin")
COIN_SETTINGS = {
    "iterations": 4,
    "problems_per_iteration": 3,
    "samples_per_problem": 3,
    "eval_every": 2,
    "evolution.prompts_per_iteration": 3,
    "evolution.window": 4,
    "evolution.crossover_probability": 1.0,
    "evolution.reflector.engine": "golden-reflector",
}
"""The coin scenario: enough iterations and samples for mixed groups and a growing population."""

FIXES: dict[str, tuple[str, ...]] = {
    **{f"coin--{m}": ("RL groups are one slot's N samples (a prompt in two slots makes two groups), as E-SPL's reference",)
       for m in ("espl", "rl")},
    **{f"hotpotqa--{m}": ("at most 5 generations per search episode, as Search-R1 (an invalid action allowed a 6th)",)
       for m in METHODS},
}
"""Scenarios re-recorded after a fix that changed them on purpose, and the fixes: the records
store the same list (`recorded_after`) and the test checks that both agree."""

FLOAT_TOLERANCE = 1e-4
"""Relative: losses and gradient norms are sums whose last bits depend on the CPU's kernels."""
ABSOLUTE_TOLERANCE = 1e-4
"""Absolute, for values near 0: a group-normalised loss is a sum of terms that cancel (about
1e-5 here), whose relative error on another CPU or thread count is large."""

ADDED_SINCE_RECORDING = frozenset({".summary.eval_prompt.operator", ".summary.eval_prompt.parents", ".summary.activity"})
"""Fields the summary gained after the records were made (what the evaluated prompt descends
from, what the learning did): new information, not a change of behaviour, so a record
without them is not a difference."""
RENAMED_SINCE_RECORDING = {"n_samples": "episodes"}
"""Evaluation keys renamed after the records were made (`n_samples` counted episodes, not
samples per task): the record's value is compared under the new name."""
ADDED_KEYS_SINCE_RECORDING = frozenset({"samples_per_task", "evaluated_adapter"})
"""Evaluation keys added after the records were made, wherever an evaluation is recorded: one
beside a renamed one, and the adapter version an evaluation pinned (information, not behaviour)."""


# -- the coin env and the scripted reflector -------------------------------------------------


class CoinEnv(TextEnv):
    """Reward 1 for a reply with an even number of characters (after stripping), else 0."""

    QUESTIONS = tuple(f"Coin question {i}: reply with anything." for i in range(8))

    def __init__(self, split: str = "test", render_mode: str | None = None):
        rows = self.QUESTIONS[:6] if split == "train" else self.QUESTIONS[6:]
        tasks = [Task(id=f"coin-{split}-{i}", question=q, answers=("even",)) for i, q in enumerate(rows)]
        super().__init__(tasks, split=split, render_mode=render_mode)

    def initial_messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def respond(self, action: str):
        even = len(action.strip()) % 2 == 0
        return float(even), True, None, {"gold": "a reply of even length", "prediction": action.strip()[:40]}


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


class GoldenReflector:
    """An engine that answers each reflector stage with a valid reply derived from the question."""

    name = "golden-reflector"
    tokenizer = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def generate(
        self, prompts: Sequence[Any], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        out = []
        for conversation in prompts:
            text = str(conversation[-1]["content"])
            reply = self.answer(text)
            words = max(1, len(reply.split()))
            out.append([Completion(list(range(words)), [0.0] * words, reply, "stop")] * params.n)
        return out

    @staticmethod
    def answer(text: str) -> str:
        tag = _tag(text)
        count = len(re.findall(r"^G\d+:", text, flags=re.MULTILINE))
        if "say how the agent approached" in text:
            return f"The agent wrote a reply; variant {tag}."
        if "Propose at most" in text:
            return "```json\n" + json.dumps([{"op": "add", "principle": f"Keep every reply tidy, variant {tag}."}]) + "\n```"
        if "revision plan" in text:
            edits = [{"op": "add", "principle": f"Check the reply length before answering, variant {tag}."}]
            if count > 1:
                edits.append({"op": "modify", "index": 0, "principle": f"Read the question twice, variant {tag}."})
            return "```json\n" + json.dumps(edits) + "\n```"
        if "Several versions of an agent's principles" in text:
            edit = {"op": "add", "principle": f"Borrow what won elsewhere, variant {tag}.", "evidence": "set B won a task"}
            return "```json\n" + json.dumps([edit]) + "\n```"
        return f"```\nG0: Answer with an even number of characters, variant {tag}.\n```"

    def close(self) -> None:
        pass


def install() -> None:
    """Register the coin env and the scripted reflector (idempotent)."""
    register("golden/Coin-v0", CoinEnv, alias="coin", kind="toy")
    register_engine("golden-reflector", f"{__name__}:GoldenReflector")


# -- running and recording ---------------------------------------------------------------------


def scenario_config(env: str, method: str) -> Any:
    from espl.config import load_config

    settings = {"method": method, "policy.model": "tiny-random", "env.name": env, "seed": 0}
    if env == "coin":
        settings.update(COIN_SETTINGS)
    return load_config("smoke", [f"{key}={json.dumps(value)}" for key, value in settings.items()])


def run_scenario(env: str, method: str, directory: Path) -> dict[str, Any]:
    """Run one scenario in `directory` and return its comparable record."""
    from espl.run.run_dir import RunDir
    from espl.run.train import run_training

    install()
    run_dir = RunDir(directory)
    run_training(scenario_config(env, method), run_dir)
    return read_record(run_dir.path)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def stable(value: Any) -> Any:
    """`value` without wall-clock figures (keys `timings` and `*_s`), which differ run to run."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k != "timings" and not k.endswith("_s")}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def read_record(path: Path) -> dict[str, Any]:
    summary = json.loads((path / "summary.json").read_text())
    rollouts = [
        [r["iteration"], r["phase"], r["task_id"], r["prompt_id"], r["sample_index"], r["reward"], r["token_ids"]]
        for r in _lines(path / "rollouts.jsonl")
    ]
    keep = ("iterations", "budget", "final", "best", "eval_prompt", "population_size", "prompts_created")
    return {
        "metrics": stable(_lines(path / "metrics.jsonl")),
        "prompts": _lines(path / "prompts.jsonl"),
        "rollouts": rollouts,
        "summary": stable({k: summary.get(k) for k in keep}),
    }


def record_path(env: str, method: str) -> Path:
    return RECORDS / f"{env}--{method}.json.gz"


def load_record(env: str, method: str) -> dict[str, Any]:
    with gzip.open(record_path(env, method), "rt") as handle:
        return json.load(handle)


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where two records differ: exact for everything but floats (relative FLOAT_TOLERANCE)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        expected = {RENAMED_SINCE_RECORDING.get(k, k) if RENAMED_SINCE_RECORDING.get(k) in actual and k not in actual
                    else k: v for k, v in expected.items()}
        out = [f"{where}.{k}: missing" for k in expected if k not in actual]
        out += [f"{where}.{k}: unexpected" for k in actual
                if k not in expected and f"{where}.{k}" not in ADDED_SINCE_RECORDING
                and k not in ADDED_KEYS_SINCE_RECORDING]
        for key in expected:
            if key in actual:
                out += differences(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items expected, {len(actual)} found"]
        return [d for i, (a, b) in enumerate(zip(expected, actual)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
            if math.isclose(expected, actual, rel_tol=FLOAT_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE):
                return []
    if expected == actual and type(expected) is type(actual):
        return []
    return [f"{where}: expected {str(expected)[:120]!r}, found {str(actual)[:120]!r}"]


def main(argv: Sequence[str] = ()) -> int:
    import tempfile

    RECORDS.mkdir(parents=True, exist_ok=True)
    chosen = set(argv)
    with tempfile.TemporaryDirectory() as scratch:
        for env in ENVS:
            for method in METHODS:
                if chosen and f"{env}--{method}" not in chosen:
                    continue
                record = run_scenario(env, method, Path(scratch) / f"{env}--{method}")
                record["recorded_after"] = list(FIXES.get(f"{env}--{method}", ()))
                with gzip.GzipFile(record_path(env, method), "wb", mtime=0) as handle:
                    handle.write(json.dumps(record, sort_keys=True).encode())
                print(f"recorded {env}--{method}: {len(record['rollouts'])} rollouts", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import golden_runs  # the registered engine target must name an importable module

    sys.exit(golden_runs.main(sys.argv[1:]))
