"""Typed run config: presets, dotted overrides, and clear errors."""

from __future__ import annotations

import sys

import pytest

from espl.config import ConfigError, load_config, preset_names


def test_presets_load_and_paper_encodes_the_papers_settings() -> None:
    assert set(preset_names()) >= {"smoke", "default", "paper"}
    paper = load_config("paper")
    assert (paper.evolution.prompts_per_iteration, paper.evolution.window) == (3, 10)
    assert (paper.problems_per_iteration, paper.samples_per_problem) == (10, 5)
    assert paper.rl.loss == "reinforce" and paper.rl.lr == 4e-5 and paper.rl.betas == (0.9, 0.95)
    assert paper.rl.lora.rank == 32 and paper.evolution.crossover_probability == 0.2
    assert paper.rl.kl.kind == "none"


def test_dotted_overrides_are_parsed_as_toml_literals() -> None:
    config = load_config(
        "smoke",
        ["rl.lr=1e-5", "evolution.selection=lucb", "rl.kl.kind=topk", "rl.betas=[0.9, 0.99]", "eval_limit=32",
         'env.kwargs={max_searches=2}', "policy.base_urls=['http://a', 'http://b']"],
    )
    assert config.rl.lr == 1e-5 and config.evolution.selection == "lucb" and config.rl.kl.kind == "topk"
    assert config.rl.betas == (0.9, 0.99) and config.eval_limit == 32
    assert config.env.kwargs == {"max_searches": 2} and config.policy.base_urls == ["http://a", "http://b"]


@pytest.mark.parametrize(
    ("override", "message"),
    [("rl.lrr=1", "unknown config key"), ("rl.lr=abc", "rl.lr must be float"), ("iterations=2.5", "iterations must be int"),
     ("rl", "section.key=value"), ("policy=3", "policy must be a table")],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", [override])


def test_unknown_preset_lists_the_built_in_ones() -> None:
    with pytest.raises(ConfigError, match="smoke"):
        load_config("no-such-preset")


def test_loading_a_config_imports_no_torch() -> None:
    import subprocess

    code = "import sys; from espl.config import load_config; load_config('paper'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
