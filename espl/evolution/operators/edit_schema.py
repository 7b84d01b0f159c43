"""The shape of a stage's edit list, as a constraint the reflector's engine can enforce.

A small reflector rarely writes a valid JSON list of edits on its own (a 135M model: 0 of 18
attempts); decoded against the list's JSON schema it always does. The schema is built from
the stage's `EditRules`: the operations it allows, indexes within the current principles, a
principle's length cap and the number of edits. When the stage lets the reflector reason
first, the constraint is a grammar: free text (no backticks), then the list in a fenced
block. Engines that cannot enforce a constraint ignore it, and the reply is parsed as before.
"""

from __future__ import annotations

from typing import Any

from agents.engine import Constraint
from espl.evolution.operators.edits import ADD, MAX_EDITS_PER_REPLY, MERGE, MODIFY, REMOVE, EditRules

REASONING_CHARS = 1200
"""How much free text a reasoning-first reply may write before its edit list."""
MERGE_PAIRS_UP_TO = 16
"""Up to this many principles, a merge's indexes are decoded as one of the distinct pairs."""
_LETTERS = "[a-z]{0,15}"
"""The rest of a word after its first letter (16 letters at most)."""
_SHAPES = (f"{_LETTERS}", "[a-z]{0,11}[-'][a-z]{1,11}", f"{_LETTERS}'")
"""A word after its first letter: plain, joined by a hyphen or apostrophe ("multi-hop",
"don't"), or with a closing apostrophe ("entities'"). Alternatives rather than an optional
group: xgrammar's JSON-string regexes skip the first character of an optional group after a
bounded class (`[a-z]{0,15}(x[a-z]{1,12})?` took 21 letters; `tests/test_edit_schema.py`)."""
WORD = "\\(?(" + "|".join(f"[A-Za-z]{shape}" for shape in _SHAPES) + "|[A-Z]{2,6}s?|[0-9]{1,6}%?)\\)?[,;:]?"
"""A word of a principle: a word of letters (a capital only first), an acronym or a number,
in parentheses or followed by a comma, semicolon or colon.

The shape is what bounds a principle's tokens: with any mix of letters, digits and colons
allowed in 24 characters, the 135M reflector wrote principles like "TASK 1:G0:GJ:GJ:..."
and "GQMGkCgJjwBgMGkCgJhjMgMg", whose odd characters cost a token each, until a revision
plan ran out of tokens inside its first principle (3 of 20 attempts,
`benchmarks/test_structured_reflection.py`)."""


def principle_pattern(max_words: int) -> str:
    """A principle as a plain sentence: a capital, 3 to `max_words` words, a final period.

    Decoded without it, a 135M reflector fills the string with fragments ("S", "1.2",
    "thnk"); a sentence shape is what a principle is, and the parser's rules still apply."""
    first = "(" + "|".join(f"[A-Z]{shape}" for shape in _SHAPES) + "|[A-Z]{2,6}s?)[,;:]?"
    return f"^{first}( {WORD}){{2,{max(max_words - 1, 2)}}}\\.$"


def edit_list_schema(rules: EditRules, min_edits: int = 0, max_edits: int | None = None) -> dict[str, Any]:
    """JSON schema of a list of `min_edits` to `max_edits` (default: the rules' cap) valid edits."""
    principle = {"type": "string", "pattern": principle_pattern(rules.max_words)}
    index = {"type": "integer", "minimum": 0, "maximum": max(rules.n_principles - 1, 0)}
    shapes: dict[str, dict[str, Any]] = {
        ADD: {"principle": principle},
        MODIFY: {"index": index, "principle": principle},
        REMOVE: {"index": index},
        MERGE: {"indices": _merge_indices(rules.n_principles), "principle": principle},
    }
    items = []
    for op in sorted(rules.allowed_ops):
        if op != ADD and rules.n_principles == 0:
            continue  # nothing to point at
        properties = {"op": {"const": op}, **shapes[op]}
        if rules.require_evidence:
            properties["evidence"] = {"type": "string", "minLength": 3, "maxLength": 200}
        items.append({"type": "object", "properties": properties, "required": list(properties),
                      "additionalProperties": False})
    out: dict[str, Any] = {"type": "array", "items": {"anyOf": items}, "maxItems": max_edits or rules.max_edits or MAX_EDITS_PER_REPLY}
    if min_edits:
        out["minItems"] = min(min_edits, out["maxItems"])
    return out


def _merge_indices(n_principles: int) -> dict[str, Any]:
    """The indexes a merge joins: any two distinct ones, listed as enumerated pairs (JSON
    schema's ``uniqueItems`` is not enforced by the decoders) up to `MERGE_PAIRS_UP_TO`
    principles; beyond that any list of indexes, and the parser drops repeats."""
    if n_principles <= MERGE_PAIRS_UP_TO:
        return {"enum": [[i, j] for i in range(n_principles) for j in range(i + 1, n_principles)]}
    index = {"type": "integer", "minimum": 0, "maximum": n_principles - 1}
    return {"type": "array", "items": index, "minItems": 2, "maxItems": n_principles}


def edit_list_constraint(
    rules: EditRules, *, reason_first: bool = False, min_edits: int = 0, max_edits: int | None = None
) -> Constraint:
    """The constraint of a stage's reply: the list itself, or reasoning then a fenced list.
    `min_edits=1` for a stage that must carry something forward (the revision plan: a small
    reflector otherwise takes the empty list, the easiest valid answer); `max_edits` bounds
    the list below the rules' cap (the plan: no more edits than proposals)."""
    schema = edit_list_schema(rules, min_edits, max_edits)
    if not reason_first:
        return Constraint.schema(schema)
    import json

    import xgrammar

    grammar = xgrammar.Grammar.concat(
        xgrammar.Grammar.from_regex(f"[^`]{{0,{REASONING_CHARS}}}```json\\n"),
        xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":")),
        xgrammar.Grammar.from_regex("\\n```"),
    )
    return Constraint(grammar=str(grammar))
