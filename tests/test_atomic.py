"""`staged_directory` swaps a folder in whole, and recovers from a kill at either point of a swap."""

from __future__ import annotations

from pathlib import Path

import pytest

from espl.files.atomic import backup_of, readable_directory, staged_directory


def _write(folder: Path, version: str) -> None:
    (folder / "state.json").write_text(version)
    (folder / "weights").mkdir()
    (folder / "weights" / "a.bin").write_text(version)


def _version(folder: Path) -> str:
    return (folder / "state.json").read_text()


def test_a_swap_replaces_the_whole_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    for version in ("1", "2"):
        with staged_directory(target) as staging:
            _write(staging, version)
    assert _version(target) == "2" and (target / "weights" / "a.bin").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_failed_block_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    with staged_directory(target) as staging:
        _write(staging, "1")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        _write(staging, "2")
        raise RuntimeError("killed mid-write")
    assert _version(target) == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_kill_between_the_two_renames_leaves_a_readable_backup(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    with staged_directory(target) as staging:
        _write(staging, "1")
    target.rename(backup_of(target))  # the state right after the first rename
    assert readable_directory(target) == backup_of(target) and _version(readable_directory(target)) == "1"
    with staged_directory(target) as staging:
        _write(staging, "2")
    assert readable_directory(target) == target and _version(target) == "2"
    assert not backup_of(target).exists()


def test_a_kill_during_the_clean_up_leaves_a_stale_backup_the_next_swap_removes(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    with staged_directory(target) as staging:
        _write(staging, "2")
    stale = backup_of(target)
    stale.mkdir()
    _write(stale, "1")  # what a removal cut short leaves beside the complete target
    assert readable_directory(target) == target
    with staged_directory(target) as staging:
        _write(staging, "3")
    assert _version(target) == "3" and not stale.exists()
