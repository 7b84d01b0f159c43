"""`espl-bench eval` end to end: a real (tiny) model on a real env, rollouts written as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espl.cli import main


@pytest.mark.slow
def test_eval_writes_one_record_per_episode_and_prints_the_metrics(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rollouts.jsonl"
    code = main(["eval", "--env", "arithmetic", "--model", "tiny-random", "--limit", "3", "--n-samples", "2",
                 "--max-tokens", "8", "--seed", "5", "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 * 2  # tasks x samples
    assert len({record["task_id"] for record in records}) == 3
    assert sorted(record["sample_index"] for record in records) == [0, 0, 0, 1, 1, 1]
    assert all(record["token_ids"] and record["done"] for record in records)
    printed = capsys.readouterr().out
    metrics, _ = json.JSONDecoder().raw_decode(printed[printed.index("{"):])
    assert str(out) in printed.replace("\n", "")
    assert metrics["model"] == "tiny-random" and metrics["n_tasks"] == 3 and metrics["episodes"] == 6
    assert metrics["generated_tokens"] == sum(record["n_sampled"] for record in records) > 0
    assert 0.0 <= metrics["accuracy"] <= 1.0 and {"pass@1", "pass@2"} <= set(metrics)
    # the accuracy is the share of successful episodes in the records it wrote
    assert metrics["accuracy"] == sum(record["reward"] >= 1 for record in records) / 6


def test_eval_refuses_an_unknown_env(capsys) -> None:
    assert main(["eval", "--env", "no-such-env", "--model", "tiny-random"]) == 2
    assert "no-such-env" in capsys.readouterr().out
