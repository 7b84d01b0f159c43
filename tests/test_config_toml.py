"""`--dry-run --write-config PATH.toml` writes the resolved config; `--preset PATH.toml` reads
it back to the same config, for every built-in preset and env, with overrides too."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from envs import registry
from espl.cli import main
from espl.config import ConfigError, load_config, preset_names
from espl.config_toml import config_toml, write_config_toml
from espl.files.toml_writer import TomlWriteError, dumps

OVERRIDES = [
    "rl.lr=1e-5", 'evolution.selection="lucb"', "evolution.selection_options={k=2.5}", "rl.betas=[0.8, 0.95]",
    'env.kwargs={max_searches=2, note="tab\\there \\"quoted\\" \\u00e9"}', 'policy.base_urls=["http://127.0.0.1:9"]',
    'evolution.operator_options={mutation={probability=0.5, max_problems=3}}', "eval_limit=3", "max_rollouts=40",
    'evolution.initial_principles=["Be brief.", "Line one\\nline two"]', "policy.vllm.max_model_len=8192",
]


def as_stored(config) -> dict:
    """The config as config.json holds it (tuples become lists, as a TOML array reads back)."""
    return json.loads(json.dumps(config.to_dict()))


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_on_every_env_round_trips(preset: str, tmp_path: Path) -> None:
    for index, env in enumerate(info.alias for info in registry.list_envs()):
        for overrides in ([], OVERRIDES):
            config = load_config(preset, overrides, {"env": {"name": env}})
            path = write_config_toml(config, tmp_path / f"{env}-{index}-{len(overrides)}.toml")
            assert as_stored(load_config(path)) == as_stored(config), (preset, env, overrides)


def test_the_cli_writes_a_preset_that_the_cli_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.toml"
    flags = ["--env", "gsm8k", "--method", "rl", "--preset", "smoke", "--model", "tiny-random", "--seed", "3",
             "--set", "rl.lr=2e-5", "--set", 'evolution.selection="softmax"']
    assert main(["run", *flags, "--dry-run", "--write-config", str(path)]) == 0
    first = json.loads(capsys.readouterr().out.split("\nconfig written to")[0])
    assert main(["run", "--preset", str(path), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["seed"] == 3 and first["rl"]["lr"] == 2e-5 and first["policy"]["model"] == "tiny-random"


def test_an_existing_file_is_never_replaced_and_write_config_needs_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "taken.toml"
    path.write_text("# mine\n")
    assert main(["run", "--preset", "smoke", "--dry-run", "--write-config", str(path)]) == 2
    assert "exists" in capsys.readouterr().out and path.read_text() == "# mine\n"
    assert main(["run", "--preset", "smoke", "--write-config", str(tmp_path / "new.toml")]) == 2
    assert "--dry-run" in capsys.readouterr().out and not (tmp_path / "new.toml").exists()


def test_none_is_left_out_only_where_it_is_the_default() -> None:
    config = load_config("smoke")
    assert config.max_rollouts is None and "max_rollouts" not in tomllib.loads(config_toml(config))
    config.eval_limit = None  # the whole test split; the default is 64, so leaving it out would change the run
    with pytest.raises(ConfigError, match="eval_limit is None"):
        config_toml(config)


def test_the_writer_gives_back_what_tomllib_reads() -> None:
    data = {
        "text": 'a "quote", a \\ backslash, \x01 control, \u00e9 and \U0001f600', "lines": "one\ntwo\r\n",
        "n": -3, "big": 2**62, "x": 0.1, "tiny": 5e-324, "huge": 1.7976931348623157e308, "whole": 2.0,
        "flags": [True, False], "nested": [[1, 2], ["a"]], "empty": [], "no_table": {},
        "inline": [{"a": 1}, {"b": {"c": "d"}}], "odd key": 1, "": "empty key",
        "table": {"x": 1, "sub": {"y": [1.5], "deeper": {"z": "z"}}, "after": "kept in its table"},
    }
    assert tomllib.loads(dumps(data)) == data
    special = tomllib.loads(dumps({"inf": math.inf, "minus": -math.inf, "nan": math.nan}))
    assert special["inf"] == math.inf and special["minus"] == -math.inf and math.isnan(special["nan"])
    with pytest.raises(TomlWriteError, match="table.x is None"):
        dumps({"table": {"x": None}})
    with pytest.raises(TomlWriteError, match="no literal"):
        dumps({"when": object()})
