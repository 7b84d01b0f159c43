"""The adapter folders a trainer published, pruned to the newest few.

Every update publishes a new `v{version:06d}` folder for engines that load adapters from disk
(vLLM), and nothing reads an old one again: the engine takes the newest at once and keeps its
own loaded copy of the previous. Kept forever they fill disks (200 updates of a 7B rank-32
adapter are about 65 GB), so only the newest `keep` stay.

Only folders this object recorded are ever removed (what this trainer wrote in this process),
and only if their name is a version folder; a run resumed in a new process leaves the few
folders of the previous process that it does not publish again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from agents.engine import Adapter

VERSION_FOLDER = re.compile(r"v\d{6}")
"""The name `espl.rl.lora.publish_adapter` gives a published version."""


class PublishedAdapters:
    """Folders published by one trainer, oldest first; `keep` newest stay on disk (0: all)."""

    def __init__(self, keep: int) -> None:
        if keep < 0:
            raise ValueError(f"keep_adapters must be at least 0 (0 keeps every one), got {keep}")
        self.keep = keep
        self.folders: list[Path] = []

    def record(self, adapter: Adapter) -> list[Path]:
        """Note a newly published adapter (the one engines serve from now on), then remove
        the folders older than the newest `keep`; returns the removed folders."""
        if adapter.path is None:
            raise ValueError("a published adapter has a folder")
        folder = Path(adapter.path)
        if folder in self.folders:  # the same version written again (after a resume): now the newest
            self.folders.remove(folder)
        self.folders.append(folder)
        return self.prune()

    def prune(self) -> list[Path]:
        if self.keep == 0 or len(self.folders) <= self.keep:
            return []
        old, self.folders = self.folders[: -self.keep], self.folders[-self.keep :]
        removed = []
        for folder in old:
            if VERSION_FOLDER.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
                removed.append(folder)
        return removed
