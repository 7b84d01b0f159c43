"""Leaderboard aggregation, files and rendering, on small synthetic run directories."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from leaderboard_runs import prompt, shared_config, write_run, write_small_suite

from espl.cli import main
from espl.leaderboard import build_report, find_run_dirs, load_runs, write_leaderboard
from espl.leaderboard.curves import mean_curve
from espl.leaderboard.lineage import build_lineage
from espl.leaderboard.stats import estimate
from espl.evolution.population import Population


@pytest.fixture
def suite_runs(tmp_path: Path) -> Path:
    return write_small_suite(tmp_path / "runs")



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
    assert espl.max_test_accuracy.mean == pytest.approx(0.5)
    assert [[(s.n_tasks, s.episodes) for s in r.eval_sizes] for r in rows] == [[(3, 3)], [(4, 8)], [(4, 8)]]
    assert espl.pass_at["pass@1"].mean == pytest.approx(0.55)
    assert espl.wall_s.mean == pytest.approx(11.0) and espl.wall_s.se == pytest.approx(1 / math.sqrt(3))
    assert espl.budget["reflector_tokens"].mean == 350 and espl.budget["reflector_tokens"].se == 0
    assert rows[2].final_accuracy.se == 0.0  # two equal seeds
    # the evolving runs logged a mutation and a crossover child each; rl and base logged only the seed
    assert espl.budget["children"].mean == 2 and rows[2].budget["children"].mean == 0
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
    assert "| 3 | 50.0 ± 20.8 | 50.0 ± 20.8 | 55.0 ± 20.8 | 4 × 2 | 16 ± 0 |" in espl_line
    assert "| aime | base | tiny-random | 1 | 5.0 | 5.0 | - | 3 × 1 | 0 |" in text
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
    population.add(prompt("p0000", (), "seed", 0, 25.0, ["a"]))
    population.add(prompt("p0001", ("p0000",), "mutation", 1, 26.0, ["b"]))
    population.add(prompt("p0002", ("p0001", "p0000"), "crossover", 2, 27.0, ["c"]))
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
    assert '<table id="leaderboard">' in html and "<td>espl</td>" in html and "50.0 ±\u00a020.8" in html
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


# -- reporting honestly: what each column holds, on how much, and what was merged --------------


def _files(runs: list[Path] | Path, tmp_path: Path) -> tuple[str, str, list[dict[str, str]]]:
    out = tmp_path / "lb" / "demo"
    write_leaderboard(runs if isinstance(runs, list) else [runs], out)
    csv_rows = list(csv.DictReader(io.StringIO(out.with_suffix(".csv").read_text())))
    return out.with_suffix(".md").read_text(), out.with_suffix(".html").read_text(), csv_rows


def _legend(markdown: str) -> str:
    """The markdown after the table: where the footnotes are."""
    lines = markdown.splitlines()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("|"))
    return "\n".join(lines[last_row + 1:]).split("\n## ")[0]


def test_the_maximum_over_test_evaluations_is_named_optimistic_and_final_is_the_unbiased_figure(
    suite_runs: Path, tmp_path: Path
) -> None:
    """Picking a run's best evaluation by its test score selects on the test set: the column says so."""
    markdown, html, rows = _files(suite_runs, tmp_path)
    header = next(line for line in markdown.splitlines() if line.startswith("| env |"))
    assert "| final test acc. (%) | max test acc. (%, optimistic) |" in header
    assert "best acc." not in markdown and "best acc." not in html
    assert "<th" in html and "max test acc. (%, optimistic)</th>" in html
    legend = _legend(markdown)
    optimistic = next(line for line in legend.splitlines() if "**max test acc. (%, optimistic)**" in line)
    assert "selects on the test set" in optimistic and "no validation split" in optimistic
    assert "final test acc." in optimistic and "unbiased" in optimistic
    assert "max_test_accuracy_mean" in rows[0] and not any(k.startswith("best_") for k in rows[0])
    espl = rows[1]
    assert float(espl["max_test_accuracy_mean"]) == pytest.approx(0.5)


def test_every_column_is_explained_and_accuracy_is_not_called_mean_reward(suite_runs: Path, tmp_path: Path) -> None:
    """Accuracy is the share of episodes with reward >= 1 (and no engine error), not the mean reward."""
    markdown, html, _ = _files(suite_runs, tmp_path)
    assert "mean reward" not in markdown and "mean reward" not in html
    header = next(line for line in markdown.splitlines() if line.startswith("| env |"))
    legend = _legend(markdown)
    for name in (cell.strip() for cell in header.strip("|").split("|")):
        assert f"- **{name}**: " in legend, name
        assert f"<li><b>{name}</b>: " in html.replace("&amp;", "&"), name
    accuracy = next(line for line in legend.splitlines() if line.startswith("- **final test acc. (%)**"))
    assert "reward ≥ 1" in accuracy and "last evaluation" in accuracy
    assert "averaged over tasks" in next(line for line in legend.splitlines() if line.startswith("- **pass@1 (%)**"))


def test_the_evaluation_size_stands_beside_the_accuracies(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "gsm8k", "rl", 0, [0.1, 0.3], eval_size=(24, 2), config=shared_config("gsm8k"))
    write_run(root, "gsm8k", "rl", 1, [0.1, 0.5], eval_size=(24, 2), config=shared_config("gsm8k"))
    write_run(root, "gsm8k", "espl", 0, [0.1, 0.2], eval_size=(12, 4), config=shared_config("gsm8k"))
    write_run(root, "gsm8k", "espl", 1, [0.1, 0.2], eval_size=(24, 2), config=shared_config("gsm8k"))
    markdown, html, rows = _files(root, tmp_path)
    header = next(line for line in markdown.splitlines() if line.startswith("| env |"))
    assert "| final test acc. (%) | max test acc. (%, optimistic) | test eval (tasks × samples) |" in header
    assert "| 2 | 40.0 ± 10.0 | 40.0 ± 10.0 | 24 × 2 |" in markdown  # rl
    assert "| 2 | 20.0 ± 0.0 | 20.0 ± 0.0 | 12 × 4, 24 × 2 |" in markdown  # espl: the seeds differ, both shown
    assert ">24\u00a0×\u00a02</td>" in html and ">12\u00a0×\u00a04, 24\u00a0×\u00a02</td>" in html
    by_method = {row["method"]: row for row in rows}
    assert by_method["rl"]["eval_tasks_x_samples"] == "24x2"
    assert by_method["rl"]["eval_n_tasks"] == "24" and by_method["rl"]["eval_episodes"] == "48"
    assert by_method["espl"]["eval_tasks_x_samples"] == "12x4;24x2" and by_method["espl"]["eval_episodes"] == "48;48"
    header_csv = list(rows[0])
    assert header_csv.index("eval_tasks_x_samples") == header_csv.index("final_accuracy_mean") - 3


def test_a_run_that_recorded_no_evaluation_size_shows_a_question_mark(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = write_run(root, "gsm8k", "rl", 0, [0.1, 0.3], config=shared_config("gsm8k"))
    summary = json.loads((path / "summary.json").read_text())
    for block in ("final", "best"):
        del summary[block]["n_tasks"], summary[block]["episodes"]
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "eval": {"accuracy": 0.3}}) + "\n")
    markdown, _, rows = _files(root, tmp_path)
    assert "| 1 | 30.0 | 30.0 | ? |" in markdown and rows[0]["eval_tasks_x_samples"] == "?"


def test_merging_runs_whose_configs_differ_outside_method_and_seed_is_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "gsm8k", "espl", seed, [0.1, 0.2], config=shared_config("gsm8k"))
    write_run(root, "gsm8k", "rl", 0, [0.1, 0.3], config=shared_config("gsm8k", rl={"lr": 1e-5, "lora": {"rank": 16}}))
    write_run(root, "gsm8k", "rl", 1, [0.1, 0.3], config=shared_config("gsm8k", eval_limit=8))
    write_run(root, "aime", "base", 0, [0.05], config=shared_config("aime", eval_limit=3))  # another env: not compared
    out = tmp_path / "lb" / "demo"
    assert main(["leaderboard", str(root), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    markdown, html = out.with_suffix(".md").read_text(), out.with_suffix(".html").read_text()
    for text in (console, markdown, html):
        assert "eval_limit" in text and "rl.lr" in text, text
        assert "rl.lora.rank" not in text and "seed" in text
    assert "warning:" in console.lower() and "differ outside method and seed" in markdown
    warning = next(line for line in markdown.splitlines() if "rl.lr" in line)
    assert warning.startswith(">") and markdown.index(warning) < markdown.index("| env |")  # above the table
    assert "gsm8k" in warning and "aime" not in warning
    assert '<p class="warning">' in html or '<div class="warning">' in html


def test_no_warning_when_only_method_and_seed_differ(
    suite_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lb" / "demo"
    assert main(["leaderboard", str(suite_runs), "--out", str(out)]) == 0
    assert "warning:" not in capsys.readouterr().out.lower()
    assert "differ outside method and seed" not in out.with_suffix(".md").read_text()
    assert 'class="warning"' not in out.with_suffix(".html").read_text()


def test_config_comparison_flattens_tables_and_names_runs_without_ashared_config(tmp_path: Path) -> None:
    from espl.leaderboard.configs import config_warnings, flatten

    assert flatten({"rl": {"lr": 1, "lora": {"rank": 2}}, "env": {"kwargs": {}}}) == {"rl.lr": 1, "rl.lora.rank": 2}
    root = tmp_path / "runs"
    write_run(root, "gsm8k", "rl", 0, [0.1, 0.3], config={"env": {"name": "gsm8k", "kwargs": {}}})
    write_run(root, "gsm8k", "espl", 0, [0.1, 0.3], config={"env": {"name": "gsm8k"}})  # {} and absent agree
    assert config_warnings(load_runs(find_run_dirs([root]))) == ()
    (write_run(root, "gsm8k", "rl", 1, [0.1, 0.3]) / "config.json").unlink()
    (warning,) = config_warnings(load_runs(find_run_dirs([root])))
    assert warning.keys == () and warning.without_config == ("rl seed 1",)
    assert "1 run(s) have no config.json" in warning.message()
