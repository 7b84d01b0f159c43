"""Fault injection on run directories and index folders: refuse with one line, lose nothing.

A finished run directory is damaged in one way per test (a planted pickle, a missing
checkpoint, a torn log line, a garbage loop state, a truncated trainer state) and resumed
through the command line; so is a folder that is not an index, given to `index --force`.
Each either resumes correctly or exits 2 with a one-line error, runs no planted code, and
leaves every completed record byte for byte as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from espl.cli import main

RECORDS = ("config.json", "metrics.jsonl", "rollouts.jsonl", "prompts.jsonl", "summary.json")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two iterations of `rl` (a trainer, so the checkpoint holds trainer.pt) on the tiny model."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code = main(["run", "--env", "arithmetic", "--method", "rl", "--preset", "smoke", "--model", "tiny-random",
                 "--iterations", "2", "--quiet", "--out", str(out)])
    assert code == 0 and (out / "checkpoint" / "trainer" / "trainer.pt").exists()
    return out


@pytest.fixture()
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in RECORDS if (run_dir / name).exists()}


def resume(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", "--resume", str(run_dir), "--quiet"])
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_refused(code: int, output: str, fragment: str) -> None:
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], output
    assert "Traceback" not in output


class Payload:
    """Unpickling this runs code: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_planted_pickle_payload_never_runs(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "payload-ran"
    torch.save({"adapters": Payload(marker)}, run_dir / "checkpoint" / "trainer" / "trainer.pt")
    before = snapshot(run_dir)
    code, output = resume(run_dir, capsys)
    assert_refused(code, output, "cannot load the trainer checkpoint")
    assert not marker.exists(), "the checkpoint ran code"
    assert snapshot(run_dir) == before


def test_a_truncated_trainer_state_is_a_one_line_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = run_dir / "checkpoint" / "trainer" / "trainer.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = snapshot(run_dir)
    assert_refused(*resume(run_dir, capsys), "cannot load the trainer checkpoint")
    assert snapshot(run_dir) == before


def test_a_missing_checkpoint_deletes_no_completed_iteration(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(run_dir / "checkpoint")
    before = snapshot(run_dir)
    assert_refused(*resume(run_dir, capsys), "checkpoint/ is missing")
    assert snapshot(run_dir) == before


def test_a_garbage_loop_state_is_a_one_line_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "checkpoint" / "loop.json").write_text("{not json")
    before = snapshot(run_dir)
    assert_refused(*resume(run_dir, capsys), "unreadable loop state")
    assert snapshot(run_dir) == before


def test_a_torn_record_of_the_checkpointed_iteration_is_refused(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text()
    last = text.rstrip("\n").rfind("\n") + 1
    metrics.write_text(text[: last + (len(text) - last) // 2])  # the iteration-2 line cut in half
    before = snapshot(run_dir)
    assert_refused(*resume(run_dir, capsys), "last line is torn")
    assert snapshot(run_dir) == before


def test_a_torn_line_of_an_iteration_in_flight_is_cut_and_the_run_resumes(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run_dir)
    with (run_dir / "rollouts.jsonl").open("a") as handle:
        handle.write('{"iteration": 3, "phase": "train", "token_')  # a kill in the middle of a write
    code, output = resume(run_dir, capsys)
    assert code == 0, output
    after = snapshot(run_dir)
    assert after["rollouts.jsonl"] == before["rollouts.jsonl"]  # only the torn line went
    assert after["metrics.jsonl"] == before["metrics.jsonl"]
    assert json.loads(after["summary.json"])["iterations"] == 2


def test_out_on_an_existing_run_refuses_instead_of_relabelling_it(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    code = main(["run", "--env", "arithmetic", "--method", "espl", "--preset", "smoke", "--model", "tiny-random",
                 "--seed", "7", "--quiet", "--out", str(run_dir)])
    out = capsys.readouterr()
    assert_refused(code, out.out + out.err, "already holds a run")
    assert snapshot(run_dir) == before


def test_index_force_refuses_a_folder_that_is_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "1", "title": "Paris", "text": "Paris is the capital of France."}) + "\n")
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    code = main(["retriever", "index", "--corpus", str(corpus), "--out", str(folder), "--force"])
    out = capsys.readouterr()
    assert code == 2 and "Traceback" not in out.out + out.err
    assert (folder / "thesis.tex").read_text() == "years of work"
