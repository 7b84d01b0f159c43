"""Leaderboard aggregation, files and rendering, on small synthetic run directories."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from espl.cli import main
from espl.leaderboard import build_report, find_run_dirs, load_runs, write_leaderboard
from espl.leaderboard.curves import mean_curve
from espl.leaderboard.lineage import build_lineage
from espl.leaderboard.stats import estimate
from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog
from espl.evolution.system_prompt import RatingPoint, SystemPrompt

BUDGET = {
    "train_rollouts": 16, "train_generated_tokens": 400, "eval_rollouts": 8, "eval_generated_tokens": 100,
    "reflector_calls": 2, "reflector_prompt_tokens": 300, "reflector_completion_tokens": 50,
    "optimizer_steps": 2, "total_generated_tokens": 550,
}


def write_run(
    root: Path, env: str, method: str, seed: int, accuracies: list[float], *, rewards: list[float] | None = None,
    budget: dict[str, int] | None = None, wall_s: float = 10.0, evolve: bool = False, pass_at: float | None = None,
) -> Path:
    """A finished run directory as `espl.run.train.run_training` leaves it (the files the leaderboard reads).

    `accuracies[i]` is the test accuracy at evaluation i, taken every 2 iterations from 0.
    """
    path = root / f"{env}--{method}--seed{seed}"
    path.mkdir(parents=True)
    rewards = rewards or [0.1 * (i + 1) for i in range(2 * (len(accuracies) - 1))]
    metrics: list[dict[str, Any]] = []
    for iteration in range(len(rewards) + 1):
        record: dict[str, Any] = {"iteration": iteration}
        if iteration:
            record["train_reward"] = rewards[iteration - 1]
        if iteration % 2 == 0:
            record["eval"] = {"accuracy": accuracies[iteration // 2], "prompt_id": "p0000"}
            if pass_at is not None:
                record["eval"]["pass@1"] = pass_at
        metrics.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    eval_id = _write_prompt_log(path / "prompts.jsonl", evolve)
    summary = {
        "env": env, "method": method, "model": "tiny-random", "engine": "hf", "seed": seed,
        "iterations": len(rewards), "budget": budget or BUDGET, "wall_s": wall_s,
        "hardware": {"cpu": "x86_64", "cpu_count": 2, "torch": "2.13.0"}, "git_commit": "0123456789abcdef-dirty",
        "final": {"accuracy": accuracies[-1], **({"pass@1": pass_at} if pass_at is not None else {})},
        "best": {"accuracy": max(accuracies)}, "eval_prompt": {"id": eval_id, "principles": ["x"]},
        "population_size": 1, "prompts_created": 3 if evolve else 1,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps({"method": method, "seed": seed}))
    return path


def _write_prompt_log(path: Path, evolve: bool) -> str:
    """A seed prompt; when evolving, a mutation child and a crossover of the two (a DAG)."""
    population, log = Population(capacity=10), PromptLog.open(path)
    population.add(_prompt("p0000", (), "seed", 0, 25.0, ["Check the arithmetic.", "Answer with a number."]))
    log.append_step(population, 0)
    if evolve:
        population.add(_prompt("p0001", ("p0000",), "mutation", 1, 27.5, ["Check the arithmetic twice."]))
        log.append_step(population, 1)
        population.add(_prompt("p0002", ("p0000", "p0001"), "crossover", 2, 29.0, ["Write each step.", "Box it."]))
        log.append_step(population, 2)
        return "p0002"
    return "p0000"


def _prompt(pid: str, parents: tuple[str, ...], operator: str, step: int, mu: float, principles: list[str]) -> SystemPrompt:
    return SystemPrompt(pid, tuple(principles), parents, operator, step, rating_history=[RatingPoint(step, mu, 2.0, operator)])


@pytest.fixture
def suite_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, accuracies in enumerate([[0.1, 0.2], [0.1, 0.4], [0.2, 0.9]]):
        write_run(root, "gsm8k", "espl", seed, accuracies, evolve=True, pass_at=accuracies[-1] + 0.05, wall_s=10.0 + seed)
    for seed, accuracies in enumerate([[0.1, 0.3], [0.1, 0.3]]):
        write_run(root, "gsm8k", "rl", seed, accuracies, pass_at=0.35)
    write_run(root, "aime", "base", 0, [0.05], budget={**BUDGET, "train_rollouts": 0})
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text("{}")
    return root


def test_mean_and_standard_error_by_hand() -> None:
    e = estimate([0.2, 0.4, 0.9])
    assert e.mean == pytest.approx(0.5)
    # deviations 0.3, 0.1, 0.4: sample variance 0.26 / 2 = 0.13, s.e. = sqrt(0.13 / 3)
    assert e.se == pytest.approx(math.sqrt(0.13 / 3)) == pytest.approx(0.208167, abs=1e-6)
    assert estimate([0.7]).se is None and estimate([]) is None
    assert e.format(scale=100) == "50.0 ± 20.8"


def test_rows_aggregate_seeds_and_sort_by_env_then_accuracy(suite_runs: Path) -> None:
    report = build_report(load_runs(find_run_dirs([suite_runs])), suite_runs.parent / "lb" / "x", "x")
    rows = report.board.rows
    assert [(r.env, r.method) for r in rows] == [("aime", "base"), ("gsm8k", "espl"), ("gsm8k", "rl")]
    espl = rows[1]
    assert espl.seeds == (0, 1, 2)
    assert espl.final_accuracy.mean == pytest.approx(0.5) and espl.final_accuracy.se == pytest.approx(math.sqrt(0.13 / 3))
    assert espl.best_accuracy.mean == pytest.approx(0.5)
    assert espl.pass_at["pass@1"].mean == pytest.approx(0.55)
    assert espl.wall_s.mean == pytest.approx(11.0) and espl.wall_s.se == pytest.approx(1 / math.sqrt(3))
    assert espl.budget["reflector_tokens"].mean == 350 and espl.budget["reflector_tokens"].se == 0
    assert rows[2].final_accuracy.se == 0.0  # two equal seeds
    assert rows[0].final_accuracy.se is None and rows[0].pass_at["pass@1"] is None
    assert espl.hardware == ("CPU x2",) and espl.git_commits == ("0123456789-dirty",)


def test_learning_curve_is_the_mean_over_seeds_at_each_iteration(suite_runs: Path) -> None:
    runs = [r for r in load_runs(find_run_dirs([suite_runs])) if r.method == "espl"]
    accuracy = mean_curve(runs, "accuracy", "espl")
    assert accuracy.iterations == (0, 2)
    assert accuracy.mean == pytest.approx((0.4 / 3, 0.5))
    assert accuracy.se[1] == pytest.approx(math.sqrt(0.13 / 3))
    reward = mean_curve(runs, "train_reward", "espl")
    assert reward.iterations == (1, 2) and reward.mean == pytest.approx((0.1, 0.2))
    assert reward.se == pytest.approx((0.0, 0.0), abs=1e-12)


def test_csv_holds_raw_means_and_standard_errors(suite_runs: Path, tmp_path: Path) -> None:
    report = write_leaderboard([suite_runs], tmp_path / "lb" / "demo")
    rows = list(csv.DictReader(io.StringIO(report.out.with_suffix(".csv").read_text())))
    assert [(r["env"], r["method"]) for r in rows] == [("aime", "base"), ("gsm8k", "espl"), ("gsm8k", "rl")]
    espl = rows[1]
    assert float(espl["final_accuracy_mean"]) == pytest.approx(0.5)
    assert float(espl["final_accuracy_se"]) == pytest.approx(0.208167, abs=1e-6)
    assert float(espl["pass@1_mean"]) == pytest.approx(0.55)
    assert espl["n_seeds"] == "3" and espl["seeds"] == "0;1;2"
    assert float(espl["budget.train_rollouts_mean"]) == 16 and espl["torch"] == "2.13.0"
    assert rows[0]["final_accuracy_se"] == ""  # one seed: no standard error


def test_markdown_has_the_table_plots_and_lineage(suite_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb" / "demo"
    write_leaderboard([suite_runs], out)
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# Leaderboard: demo\n")
    espl_line = next(line for line in text.splitlines() if line.startswith("| gsm8k | espl |"))
    assert "| 3 | 50.0 ± 20.8 | 50.0 ± 20.8 | 55.0 ± 20.8 | 16 ± 0 |" in espl_line
    assert "| aime | base | tiny-random | 1 | 5.0 | 5.0 | - | 0 |" in text
    for name in ("accuracy-gsm8k", "reward-gsm8k", "lineage-gsm8k", "accuracy-aime"):
        assert f"](demo/{name}.png)" in text
        assert (out / f"{name}.png").stat().st_size > 2000 and (out / f"{name}.svg").read_text().startswith("<?xml")
    assert not (out / "lineage-aime.png").exists()  # nothing evolved there
    assert "### Best evolved prompt: p0002" in text
    assert "p0002 [crossover, step 2, mu 29.00 ± 2.00]" in text
    assert "    └─ p0000 (shown above)" in text
    assert "1. Write each step.\n2. Box it." in text


def test_lineage_text_tree_walks_every_parent_once() -> None:
    population = Population()
    population.add(_prompt("p0000", (), "seed", 0, 25.0, ["a"]))
    population.add(_prompt("p0001", ("p0000",), "mutation", 1, 26.0, ["b"]))
    population.add(_prompt("p0002", ("p0001", "p0000"), "crossover", 2, 27.0, ["c"]))
    lineage = build_lineage(population, "p0002")
    assert lineage.text_tree() == [
        "p0002 [crossover, step 2, mu 27.00 ± 2.00]",
        "  └─ p0001 [mutation, step 1, mu 26.00 ± 2.00]",
        "    └─ p0000 [seed, step 0, mu 25.00 ± 2.00]",
        "  └─ p0000 (shown above)",
    ]
    assert lineage.depths() == {"p0002": 2, "p0001": 1, "p0000": 0}
    assert sorted(lineage.edges) == [("p0000", "p0001"), ("p0000", "p0002"), ("p0001", "p0002")]


def test_html_is_self_contained(suite_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb" / "demo"
    write_leaderboard([suite_runs], out)
    html = out.with_suffix(".html").read_text()
    assert '<table id="leaderboard">' in html and "<td>espl</td>" in html and "50.0 ± 20.8" in html
    assert html.count("data:image/png;base64,") == 3  # gsm8k accuracy + reward, aime accuracy (base never trains)
    assert "<svg" in html and "<?xml" not in html and "<!DOCTYPE svg" not in html
    lowered = html.lower()
    for external in ("<script", "<link", 'src="http', "src='http", "url(http", "@import"):
        assert external not in lowered


def test_building_twice_gives_identical_bytes(suite_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb" / "demo"
    write_leaderboard([suite_runs], out)
    files = sorted([*out.parent.glob("demo.*"), *out.glob("*")])
    first = {p: p.read_bytes() for p in files}
    write_leaderboard([suite_runs], out)
    assert len(files) == 3 + 2 * 4 and {p: p.read_bytes() for p in files} == first


def test_find_run_dirs_takes_globs_and_folders_and_skips_unfinished(suite_runs: Path) -> None:
    everything = find_run_dirs([suite_runs])
    assert len(everything) == 6 and all((p / "summary.json").exists() for p in everything)
    assert [p.name for p in find_run_dirs([str(suite_runs / "gsm8k--rl--*")])] == ["gsm8k--rl--seed0", "gsm8k--rl--seed1"]
    assert find_run_dirs([suite_runs / "unfinished", suite_runs / "nowhere"]) == []


def test_leaderboard_command(suite_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "boards" / "cli"
    assert main(["leaderboard", str(suite_runs / "gsm8k--*"), "--out", str(out), "--title", "GSM8K check"]) == 0
    assert out.with_suffix(".md").read_text().startswith("# Leaderboard: GSM8K check")
    assert "5 runs, 2 rows" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no finished run directory" in capsys.readouterr().out


# -- the HTML page in a real browser -------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)


def _screenshot(page: Path, tmp_path: Path, height: int = 2000) -> tuple[Path, list[str]]:
    """Load a page in headless Chromium; returns the screenshot and the page's console messages."""
    shot = tmp_path / f"{page.stem}.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", f"--window-size=1280,{height}", "--enable-logging=stderr", "--v=0", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return shot, console


def _count_near(pixels: list[tuple[int, int, int]], colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return sum(all(abs(a - b) <= tolerance for a, b in zip(p, colour)) for p in pixels)


@needs_chromium
def test_console_messages_of_a_page_are_caught(tmp_path: Path) -> None:
    """The check below would see an error: a page that logs one is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("boom"); throw new Error("kaboom");</script>')
    _, console = _screenshot(page, tmp_path, height=300)
    assert any('"boom"' in line for line in console) and any("Uncaught Error: kaboom" in line for line in console)


@needs_chromium
@pytest.mark.slow
def test_html_renders_in_chromium_with_table_and_plots_and_no_console_errors(suite_runs: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "lb" / "demo"
    write_leaderboard([suite_runs], out)
    shot, console = _screenshot(out.with_suffix(".html"), tmp_path, height=2600)
    assert console == []
    assert shot.stat().st_size > 50_000
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2600)
    pixels = list(image.get_flattened_data())
    assert len(set(pixels)) > 500  # text, table rules, anti-aliased curves: far from a blank page
    assert _count_near(pixels, (0xF3, 0xF5, 0xF7), tolerance=1) > 5_000  # the table's header row
    assert _count_near(pixels, (0x1F, 0x77, 0xB4)) > 300  # the first method's curve (matplotlib C0)
    assert _count_near(pixels, (0xFF, 0x7F, 0x0E)) > 300  # the second method's curve (C1)
    assert _count_near(pixels, (0xD8, 0xF0, 0xD2), tolerance=3) > 500  # the crossover node of the inline SVG lineage
