"""Replace a whole directory so that a reader, or a run killed at any instant, finds either the
old version or the new one complete, never a mix (a run's checkpoint: trainer state and loop
state together).

A directory cannot be renamed onto a non-empty one, so a swap is two renames (target to
``target.old``, staging to target) and then the removal of ``target.old``. A kill between the
renames leaves only ``target.old``, which is complete: `readable_directory` returns it, and the
next swap discards it. A kill during the removal leaves a stale ``target.old`` beside a
complete target: the next swap removes it first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BACKUP_SUFFIX = ".old"


def backup_of(target: Path) -> Path:
    return target.with_name(target.name + BACKUP_SUFFIX)


def readable_directory(target: str | Path) -> Path:
    """`target`, or its backup when a swap was cut off between its two renames."""
    target = Path(target)
    backup = backup_of(target)
    return backup if not target.exists() and backup.exists() else target


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; once the block succeeds, it replaces `target`.

    If the block raises, `target` is left as it was and the folder is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        backup = backup_of(target)
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)  # left by a swap killed during its clean-up
            os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
