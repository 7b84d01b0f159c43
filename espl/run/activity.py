"""What a run's learning did, in a few numbers, and why when it did nothing.

A run can end with every reward 0 (RL skips every group), with no mixed problem (mutation
has nothing to contrast), with one prompt (no match to play). `summary.json` says so under
`activity`, and `espl-bench run` prints it in one line each, so a user does not have to dig
through `metrics.jsonl` to learn why a learning curve is flat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from espl.evolution.population import Population
from espl.evolution.system_prompt import SEED_OPERATOR


def activity(records: Iterable[Mapping[str, Any]], population: Population) -> dict[str, Any]:
    """RL steps and skips, matches played, children by operator, and why children were not made."""
    records = [r for r in records if int(r.get("iteration", 0)) > 0]
    rewards = [float(r["train_reward"]) for r in records if "train_reward" in r]
    out: dict[str, Any] = {"train_reward_mean": sum(rewards) / len(rewards) if rewards else None}
    steps = [r["train"] for r in records if isinstance(r.get("train"), Mapping)]
    if steps:
        skipped = sum(1 for s in steps if s.get("skipped"))
        out["rl"] = {
            "optimizer_steps": int(sum(float(s.get("optimizer_steps", 0.0 if s.get("skipped") else 1.0)) for s in steps)),
            "skipped_iterations": skipped,
        }
    evolutions = [r["evolution"] for r in records if isinstance(r.get("evolution"), Mapping)]
    matches = [e["match"] for e in evolutions if isinstance(e.get("match"), Mapping)]
    proposals = [(op, p) for e in evolutions for op, p in e.items() if isinstance(p, Mapping) and "child" in p]
    if matches or proposals:
        out["evolution"] = {
            "matches_played": sum(1 for m in matches if m.get("played")),
            "children": dict(Counter(p.operator for p in population.archive() if p.operator != SEED_OPERATOR)),
            "no_child": dict(Counter(f"{op}: {p['reason']}" for op, p in proposals if p.get("child") is None)),
        }
    return out


def explain(summary: Mapping[str, Any]) -> list[str]:
    """One line per part of the learning: what happened, and why when nothing did."""
    found = summary.get("activity") or {}
    lines = []
    mean = found.get("train_reward_mean")
    if mean is not None:
        graded = summary.get("partial_credit")
        lines.append(f"train reward: mean {mean:.3f}" + (f" (partial credit: {graded}; exact match in evaluation)"
                                                          if graded else ""))
    rl = found.get("rl")
    if rl is not None:
        line = f"RL: {rl['optimizer_steps']} optimizer step(s)"
        if rl["skipped_iterations"]:
            line += (f"; {rl['skipped_iterations']} iteration(s) without a step: every group's samples had the same"
                     " reward, so there was nothing to learn from")
        lines.append(line)
    evolution = found.get("evolution")
    if evolution is not None:
        played = evolution["matches_played"]
        lines.append(f"TrueSkill: {played} match(es) played" + ("" if played else
                     " (a match needs two distinct prompts in an iteration)"))
        children = evolution["children"]
        if children:
            made = ", ".join(f"{op} {n}" for op, n in sorted(children.items()))
            lines.append(f"children: {sum(children.values())} ({made})")
        else:
            reasons = Counter(evolution["no_child"]).most_common(2)
            why = "; ".join(f"{reason} (x{n})" for reason, n in reasons) or "no operator ran"
            lines.append(f"children: none; {why}")
    return lines
