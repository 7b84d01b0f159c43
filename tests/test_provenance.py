"""A run's commit is `-dirty` when code differs from it, not when `compare` has rewritten the
leaderboards of the same checkout (which every later run of a suite would otherwise record)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from espl.run.provenance import git_commit


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_rewritten_leaderboards_do_not_make_the_commit_dirty_but_code_does(tmp_path: Path) -> None:
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "suite.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "start")
    clean = git_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "leaderboards" / "suite.md").write_text("rewritten by compare\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "-dirty"
