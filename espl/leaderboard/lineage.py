"""The lineage of an evolved prompt: its ancestors graph, as data and as an indented text tree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from espl.leaderboard.collect import RunRecord
from espl.leaderboard.table import Leaderboard
from espl.evolution.population import Population
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import PROMPTS


@dataclass(frozen=True)
class LineageNode:
    id: str
    operator: str
    step: int
    parents: tuple[str, ...]
    mu: float | None
    sigma: float | None
    principles: tuple[str, ...]

    @property
    def label(self) -> str:
        rating = "unrated" if self.mu is None else f"μ {self.mu:.1f} ± {self.sigma:.1f}"
        return f"{self.id}\n{self.operator} @ {self.step}\n{rating}"

    @property
    def one_line(self) -> str:
        rating = "unrated" if self.mu is None else f"mu {self.mu:.2f} ± {self.sigma:.2f}"
        return f"{self.id} [{self.operator}, step {self.step}, {rating}]"


@dataclass(frozen=True)
class Lineage:
    """The prompt a run evaluated and every prompt it descends from."""

    run: RunRecord | None
    prompt_id: str
    nodes: dict[str, LineageNode]
    edges: tuple[tuple[str, str], ...]
    """(parent, child)."""

    @property
    def prompt(self) -> LineageNode:
        return self.nodes[self.prompt_id]

    def depths(self) -> dict[str, int]:
        """Generation of each node: 0 for roots, 1 + the deepest parent otherwise."""
        depth: dict[str, int] = {}

        def visit(node_id: str) -> int:
            if node_id not in depth:
                parents = self.nodes[node_id].parents
                depth[node_id] = 1 + max(visit(p) for p in parents) if parents else 0
            return depth[node_id]

        for node_id in self.nodes:
            visit(node_id)
        return depth

    def text_tree(self) -> list[str]:
        """The evaluated prompt first, each parent indented under its child; a node reached
        twice (crossover joins lines) is printed once and referred to afterwards."""
        lines: list[str] = []
        shown: set[str] = set()

        def visit(node_id: str, depth: int) -> None:
            node = self.nodes[node_id]
            prefix = "  " * depth + ("└─ " if depth else "")
            if node_id in shown:
                lines.append(f"{prefix}{node_id} (shown above)")
                return
            shown.add(node_id)
            lines.append(prefix + node.one_line)
            for parent in node.parents:
                visit(parent, depth + 1)

        visit(self.prompt_id, 0)
        return lines


def build_lineage(population: Population, prompt_id: str, run: RunRecord | None = None) -> Lineage:
    ids = [prompt_id, *population.ancestors(prompt_id)]
    nodes = {}
    for node_id in ids:
        prompt = population.get(node_id)
        rating = prompt.rating
        nodes[node_id] = LineageNode(
            node_id, prompt.operator, prompt.created_step, prompt.parents,
            None if rating is None else rating.mu, None if rating is None else rating.sigma, prompt.principles,
        )
    return Lineage(run, prompt_id, nodes, tuple(population.lineage_edges(prompt_id)))


def load_lineage(run: RunRecord) -> Lineage:
    population = load_prompt_log(Path(run.path) / PROMPTS)
    prompt_id = (run.summary.get("eval_prompt") or {}).get("id") or population.newest.id
    return build_lineage(population, prompt_id, run)


def best_evolved_lineage(leaderboard: Leaderboard, env: str, evolving: Sequence[str]) -> Lineage | None:
    """The lineage behind the best run of the best prompt-evolving method on `env`.

    Rows are already sorted best first. A run counts only when the prompt it evaluated has a
    parent: a seed prompt alone is no lineage, even where the run created candidates that lost
    to it. None when no such run exists (e.g. a suite of RL runs only).
    """
    for row in leaderboard.rows_for(env):
        if row.method not in evolving:
            continue
        candidates = [r for r in row.runs if r.has_prompt_log]
        ranked = sorted(candidates, key=lambda r: (-float((r.summary.get("final") or {}).get("accuracy", 0.0)), r.seed))
        for run in ranked:
            lineage = load_lineage(run)
            if lineage.edges:
                return lineage
    return None
