"""Applying validated edits to a principle list.

Every index in a batch of edits refers to the list the edits were proposed against, so the
edits are applied to slots of that list rather than one after another (removing G1 must not
shift what "G3" means for the next edit). Each slot may be touched by one edit only: the first
edit that claims a slot wins and later ones are dropped with a reason. A merge keeps the merged
principle in the slot of its lowest index. Additions go to the end, in order. The result is
then renumbered simply by position (G0..Gn), and duplicates are removed, keeping the first:
principles that read the same (`text.skeleton`: ignoring case, spacing, compatibility forms
and look-alike letters from other scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from espl.evolution.operators.edits import ADD, MERGE, MODIFY, REMOVE, Edit
from espl.evolution.operators.text import skeleton


@dataclass
class EditOutcome:
    principles: tuple[str, ...]
    applied: list[Edit] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def apply_edits(principles: Sequence[str], edits: Sequence[Edit]) -> EditOutcome:
    """The list after `edits` (see the module doc); never raises on a bad edit."""
    slots: list[str | None] = list(principles)
    claimed: set[int] = set()
    additions: list[str] = []
    outcome = EditOutcome(principles=())
    for position, edit in enumerate(edits):
        targets = _targets(edit)
        if any(not 0 <= i < len(slots) for i in targets):
            outcome.rejected.append(f"edit {position} ({edit.op}): index outside the list")
            continue
        if claimed.intersection(targets):
            outcome.rejected.append(f"edit {position} ({edit.op}): a principle it targets was already edited")
            continue
        if edit.op in (ADD, MODIFY, MERGE) and not edit.principle:
            outcome.rejected.append(f"edit {position} ({edit.op}): no principle text")
            continue
        if edit.op == ADD:
            assert edit.principle is not None
            additions.append(edit.principle)
        elif edit.op == MODIFY:
            slots[targets[0]] = edit.principle
        elif edit.op == REMOVE:
            slots[targets[0]] = None
        elif edit.op == MERGE:
            slots[targets[0]] = edit.principle
            for index in targets[1:]:
                slots[index] = None
        else:
            outcome.rejected.append(f"edit {position}: unknown operation {edit.op!r}")
            continue
        claimed.update(targets)
        outcome.applied.append(edit)
    seen: set[str] = set()
    result: list[str] = []
    for text in [s for s in slots if s is not None] + additions:
        key = skeleton(text)
        if key in seen:
            outcome.rejected.append(f"duplicate principle dropped: {text[:60]!r}")
            continue
        seen.add(key)
        result.append(text)
    outcome.principles = tuple(result)
    return outcome


def _targets(edit: Edit) -> list[int]:
    if edit.op in (MODIFY, REMOVE):
        return [edit.index] if edit.index is not None else [-1]
    if edit.op == MERGE:
        return sorted(edit.indices) if len(edit.indices) >= 2 else [-1]
    return []
