"""A hub id that cannot be had offline is one clear line, not transformers' stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.models import ModelUnavailable, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
HUB_ID = "espl-bench-tests/no-such-model"


def test_an_unreachable_hub_id_says_what_failed_and_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as raised:
        load_tokenizer(HUB_ID)
    message = str(raised.value)
    assert "\n" not in message
    assert f"could not load the tokenizer of {HUB_ID!r}" in message
    assert "no model hub is reachable" in message and "pass a local model folder" in message
    assert isinstance(raised.value.__cause__, OSError)  # transformers' error stays chained


def test_a_local_folder_keeps_its_own_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a folder that is not a model
    with pytest.raises(Exception) as raised:
        load_tokenizer(str(tmp_path))
    assert not isinstance(raised.value, ModelUnavailable)


@pytest.mark.slow
def test_eval_with_an_unreachable_hub_id_prints_one_line() -> None:
    command = [sys.executable, "-m", "espl.cli", "eval", "--env", "gsm8k", "--engine", "openai", "--model", HUB_ID,
               "--base-url", "http://127.0.0.1:9", "--limit", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 2
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"could not load the tokenizer of {HUB_ID!r}" in line and "no model hub is reachable" in line


def test_a_run_whose_model_never_loaded_leaves_its_out_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from espl.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    command = ["run", "--env", "gsm8k", "--method", "base", "--preset", "smoke", "--model", HUB_ID, "--quiet",
               "--out", str(out)]
    assert main(command) == 2
    assert not out.exists()  # made by the command, and nothing else was in it
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(command) == 2  # not refused as "already holds a run": the model is what failed again
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
