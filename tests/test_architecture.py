"""The layering the README promises, checked on the source: imports point one way, no cycles,
no module over 400 lines, engine names known only to the run builder and its plan."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("envs", "agents", "espl")
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Project modules `path` imports at run time (TYPE_CHECKING blocks left out)."""
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> Iterator[None]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.ClassDef):
                inner = top  # class bodies run at import time
            if isinstance(child, ast.Import) and (top or not module_level_only):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 and (top or not module_level_only):
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            yield from visit(child, inner)

    list(visit(ast.parse(path.read_text()), True))
    return {name for name in found if name in MODULES}


def _owners(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


RUNTIME = {name: imports(path, module_level_only=False) for name, path in MODULES.items()}
IMPORT_TIME = {name: imports(path, module_level_only=True) for name, path in MODULES.items()}

RULES = [
    # (importer prefix, forbidden prefixes, why)
    ("envs", ("agents", "espl"), "an environment knows nothing about models or methods"),
    ("agents", ("espl",), "the agent layer never depends on the methods"),
    ("espl.rl", ("espl.evolution", "espl.run", "espl.methods", "espl.gepa", "espl.config", "espl.commands",
                 "espl.leaderboard", "espl.cli"), "RL is a peer of evolution, composed by methods"),
    ("espl.evolution", ("espl.rl", "espl.run", "espl.methods", "espl.gepa", "espl.config", "espl.commands",
                        "espl.leaderboard", "espl.cli"), "evolution is a peer of RL, composed by methods"),
    ("espl.files", ("espl.", "agents", "envs"), "file formats are a leaf"),
    ("espl.run", ("espl.commands", "espl.cli", "espl.leaderboard"), "the harness does not import the face"),
    ("espl.methods", ("espl.commands", "espl.cli", "espl.leaderboard"), "methods do not import the face"),
    ("espl.gepa", ("espl.commands", "espl.cli", "espl.leaderboard"), "methods do not import the face"),
    ("espl.launch", ("espl.commands", "espl.cli", "espl.leaderboard", "espl.run", "espl.rl", "espl.evolution",
                     "espl.methods", "agents"), "the launcher starts the command line's processes; it imports none of it"),
    ("espl.tracking", ("espl.run", "espl.methods", "espl.gepa", "espl.rl", "espl.config", "espl.commands", "espl.cli",
                       "espl.leaderboard"), "trackers only mirror the records they are fed"),
]


def _under(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


@pytest.mark.parametrize(("importer", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_imports_point_one_way(importer: str, forbidden: tuple[str, ...], why: str) -> None:
    broken = sorted(
        f"{name} imports {target}"
        for name, targets in RUNTIME.items() if _under(name, importer)
        for target in targets if any(_under(target, f) for f in forbidden) and not _under(target, importer)
    )
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over import-time edges (package inits included)."""
    graph = {name: {owner for target in targets for owner in _owners(target) if owner in MODULES and owner != name}
             for name, targets in IMPORT_TIME.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if _under(node, nxt):
                continue  # a module importing its own package's __init__ is how packages load
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in graph:
            if node not in index:
                connect(node)
    finally:
        sys.setrecursionlimit(limit)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


ENGINE_NAME = re.compile(r"""==\s*["'](hf|vllm|openai)["']|["'](hf|vllm|openai)["']\s*==|getattr\([^)]*release_turns""")


def test_only_the_run_builder_and_its_plan_test_engine_names() -> None:
    allowed = {"espl.run.builder", "espl.run.plan"}
    offenders = sorted(
        name for name, path in MODULES.items()
        if name not in allowed and not name.startswith("agents.engines") and ENGINE_NAME.search(path.read_text())
    )
    assert not offenders, offenders
