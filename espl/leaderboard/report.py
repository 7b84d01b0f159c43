"""What a leaderboard report is made of: the board, and per env its figures and lineage.

`build` assembles a `Report`; `markdown` and `html` render one. Keeping the types here lets
the renderers and the builder depend on them without depending on each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from espl.leaderboard.lineage import Lineage
from espl.leaderboard.table import Leaderboard


@dataclass(frozen=True)
class Figure:
    """A figure written as `<stem>.png` and `<stem>.svg`."""

    stem: Path
    title: str


@dataclass(frozen=True)
class EnvSection:
    env: str
    accuracy: Figure | None
    reward: Figure | None
    lineage: Lineage | None
    """The best evolved prompt's ancestry; None unless a prompt-evolving run evaluated a prompt with a parent."""
    lineage_figure: Figure | None
    lineage_note: str | None = None
    """Why there is no lineage where prompt-evolving methods ran."""


@dataclass(frozen=True)
class Report:
    board: Leaderboard
    out: Path
    """Path stem: the files are `<out>.md` etc. and the figures live in `<out>/`."""
    sections: tuple[EnvSection, ...]

    def relative(self, path: Path) -> str:
        """A path as seen from the folder holding the report (for links and captions)."""
        return Path(os.path.relpath(Path(path).resolve(), self.out.parent.resolve())).as_posix()

    @property
    def files(self) -> list[Path]:
        return [self.out.with_suffix(s) for s in (".md", ".csv", ".html")]
