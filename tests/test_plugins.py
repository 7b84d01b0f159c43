"""A method and an operator from another package, found through the `espl_bench.plugins`
entry-point group, run an iteration with no file of the project edited."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from espl import plugins
from espl.config import load_config
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import RunDir
from espl.run.train import run_training

PLUGIN = '''
"""A plugin: an operator that appends a fixed rule, and a method that evolves with it."""

from espl.evolution.operators import Proposal, build_child, register_operator
from espl.evolution.reflector import ReflectorUsage
from espl.evolution.system_prompt import PromptLimits
from espl.methods import register_method
from espl.methods.composed import ComposedMethod, Parts
from espl.run import builder


class AppendRule:
    name = "append-rule"

    def __init__(self, rule="Check the answer once more."):
        self.rule = rule

    def propose(self, context):
        parent = context.best
        child, reason = build_child(
            [*parent.principles, f"{self.rule} (step {context.step})"], parents=[parent], operator=self.name,
            step=context.step, new_id=context.new_id, limits=PromptLimits(),
            rating=self.child_rating([parent], context.ratings) if context.ratings else None,
        )
        return Proposal(child, reason, ReflectorUsage())

    def child_rating(self, parents, ratings):
        return ratings.mutation_child(parents[0].rating)


class AppendOnly(ComposedMethod):
    name = "append-only"
    description = "frozen weights; a rated population grown by appending rules"

    def compose(self, run):
        population = run.start_population()
        evolver = builder.build_evolver(run, population, rated=True)
        return Parts(population, builder.build_selection(run.plan), evolver=evolver)


register_operator("append-rule", AppendRule)
register_method("append-only", AppendOnly)
'''


@pytest.fixture()
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "espl_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "espl_plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: espl-plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nmine = espl_plugin_pkg.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setattr(plugins, "_loaded", False)
    yield tmp_path
    from espl.evolution import operators
    from espl import methods

    operators._OPERATORS.pop("append-rule", None)
    methods._METHODS.pop("append-only", None)
    for name in ("espl_plugin_pkg.plugin", "espl_plugin_pkg"):
        sys.modules.pop(name, None)


def test_a_plugin_method_and_operator_run_an_iteration(plugin_package: Path, tmp_path: Path) -> None:
    config = load_config("smoke", [
        'method="append-only"', 'policy.model="tiny-random"', 'env.name="arithmetic"',
        'evolution.operators=["append-rule"]', 'evolution.operator_options={"append-rule"={rule="Show the work."}}',
    ])
    run_dir = RunDir(tmp_path / "run")
    summary = run_training(config, run_dir)
    assert summary["method"] == "append-only" and summary["iterations"] == 1
    (iteration,) = [m for m in run_dir.read("metrics.jsonl") if m["iteration"] == 1]
    child_id = iteration["evolution"]["append-rule"]["child"]
    assert child_id and iteration["evolution"]["match"]["played"] is False  # one prompt ran
    child = load_prompt_log(run_dir.file("prompts.jsonl")).get(child_id)
    assert child.operator == "append-rule" and child.principles[-1] == "Show the work. (step 1)"
    assert child.rating is not None and child.parents == ("p0000",)
