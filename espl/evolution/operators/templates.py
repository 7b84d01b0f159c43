"""The reflector's instructions for each operator stage, and the functions that fill them in.

Templates use `string.Template` (`$name` placeholders), so the JSON examples inside them need no
brace escaping. They are kept short: the default reflector is a 135M model with an 8k context,
and every character of instruction is a character less for the evidence. Everything inserted
is cleaned and clipped by the caller (see `espl.evolution.operators.text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from string import Template

from agents.engine import Conversation

REVIEWER_SYSTEM = (
    "You review the work of an AI agent and improve the short list of principles it follows. "
    "Be concrete, brief and factual."
)

SUMMARY = Template(
    """An agent attempted the task below. Its attempt $outcome (reward $reward).

### Task
$question

### Reference answer
$gold

### The attempt
$transcript

In at most $max_words words, say how the agent approached the task, where it went right or \
wrong, and what decided the outcome. Write the summary only."""
)

CRITIQUE = Template(
    """The agent follows these principles:
$principles

It tried the task below several times. $contrast

### Task
$question

### Reference answer
$gold

### Attempts that succeeded
$successes

### Attempts that failed
$failures

What would make success more likely on tasks like this one? Propose at most $max_edits \
changes to the principles: "add" a new one, or "modify" an existing one by its number. A \
principle is one general sentence (never the answer to this task) of at most $max_words words.

$reply"""
)

LIST_ONLY = """Reply with a JSON list in a fenced block, like:
```json
[{"op": "add", "principle": "..."}, {"op": "modify", "index": 0, "principle": "..."}]
```
Reply [] if nothing should change."""

REASON_THEN_LIST = """First say in a few sentences what separates the attempts that succeeded from those \
that failed. Then give the changes as a JSON list in a fenced block, like:
```json
[{"op": "add", "principle": "..."}, {"op": "modify", "index": 0, "principle": "..."}]
```
Give [] if nothing should change."""
"""The critique's answer: the list alone, or an analysis first (the paper's critique)."""

CONTRAST_MIXED = "Some attempts succeeded and some failed; find what separates them."
CONTRAST_FAILED = "Every attempt failed; find the mistake they share."

PLAN = Template(
    """The agent follows these principles:
$principles

Reviewers of different tasks proposed these changes:
$proposals

Turn the proposals into one consistent revision plan. Skip proposals that repeat each other \
or an existing principle, and fold overlapping principles into one. Operations:
- {"op": "add", "principle": "..."} appends a principle
- {"op": "modify", "index": i, "principle": "..."} rewrites principle Gi
- {"op": "merge", "indices": [i, j], "principle": "..."} replaces Gi and Gj by one principle
Use the numbers above. Each principle is one general sentence of at most $max_words words.

Reply with the plan as a JSON list in a fenced block:
```json
[...]
```"""
)

CROSSOVER = Template(
    """Several versions of an agent's principles were run on the same tasks.

### Set A (best overall)
$best
$best_wins
$others

Each set besides A was the only best on the tasks listed under it. Improve set A by taking \
over what made those sets win. Edits to set A:
- {"op": "add", "principle": "...", "evidence": "..."}
- {"op": "modify", "index": i, "principle": "...", "evidence": "..."}
- {"op": "remove", "index": i, "evidence": "..."}
Indexes are set A's numbers. "evidence" names the set and task that support the edit. Each \
principle is one general sentence of at most $max_words words.

$reply"""
)

CROSSOVER_LIST_ONLY = """Reply with a JSON list in a fenced block:
```json
[...]
```"""

CROSSOVER_REASON_THEN_LIST = """First say in a few sentences what the winning sets do that set A does not. Then \
give the edits as a JSON list in a fenced block:
```json
[...]
```"""

OTHER_SET = Template(
    """### Set $label
$principles
Tasks where set $label was best:
$tasks"""
)

JSON_BLOCK_END = ("]\n```",)
"""Stop strings for the stages that answer with a fenced JSON list: the list and its fence are
complete, and whatever a small reflector writes after them costs time and is never read."""

NONE_TEXT = "(none)"
UNKNOWN_GOLD = "(not available)"


def conversation(user_text: str) -> Conversation:
    """A reviewer conversation: the fixed system message and one user turn."""
    return [{"role": "system", "content": REVIEWER_SYSTEM}, {"role": "user", "content": user_text}]


def numbered(principles: Sequence[str]) -> str:
    """`G0: ...` lines, the same labels the policy sees."""
    if not principles:
        return NONE_TEXT
    return "\n".join(f"G{i}: {text}" for i, text in enumerate(principles))


def bullets(items: Sequence[str]) -> str:
    if not items:
        return NONE_TEXT
    return "\n".join(f"{i + 1}. {item}" for i, item in enumerate(items))


def set_label(position: int) -> str:
    """B, C, ..., Z, then B2, C2, ... (A is the best set)."""
    letters = "BCDEFGHIJKLMNOPQRSTUVWXYZ"
    round_, offset = divmod(position, len(letters))
    return letters[offset] + (str(round_ + 1) if round_ else "")
