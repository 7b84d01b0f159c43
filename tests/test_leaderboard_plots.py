"""What the leaderboard's figures and links show: one colour per method in every plot, plain
tick labels on flat axes, a lineage only where a prompt has a parent, and links only to files
that exist (and, for the committed boards, that git tracks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from leaderboard_runs import SIX_METHODS, write_cpu_suites, write_small_suite
from matplotlib.colors import to_hex

from espl.leaderboard import plots, write_leaderboard
from espl.leaderboard.colours import METHOD_COLOURS, OTHER_COLOURS, method_colour
from espl.leaderboard.curves import Curve

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def boards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two boards built from different runs: the colours must agree within and across them."""
    root = tmp_path_factory.mktemp("boards")
    cpu = write_leaderboard([write_cpu_suites(root / "cpu-runs")], root / "out" / "cpu").out
    small = write_leaderboard([write_small_suite(root / "small-runs")], root / "out" / "small").out
    return {"cpu": cpu, "small": small}


def curve_colours_in_svg(path: Path) -> dict[str, set[str]]:
    """Per method, the stroke colours of its line (`<g id="curve-<method>">`) in a saved SVG."""
    found: dict[str, set[str]] = {}
    for group in ET.parse(path).iter(f"{SVG}g"):
        gid = group.get("id", "")
        if gid.startswith("curve-"):
            styles = [p.get("style", "") for p in group.iter(f"{SVG}path")]
            colours = {m.group(1) for style in styles if (m := re.search(r"stroke: (#[0-9a-f]{6})", style))}
            found.setdefault(gid.removeprefix("curve-"), set()).update(colours)
    return found


def test_every_plot_of_every_board_draws_a_method_in_the_same_colour(boards: dict[str, Path]) -> None:
    svgs = sorted(p for out in boards.values() for p in out.glob("*.svg") if not p.name.startswith("lineage-"))
    assert len(svgs) == 7  # cpu: accuracy and reward on two envs; small: both on gsm8k, accuracy on aime
    seen: dict[str, set[str]] = {}
    plots_per_method: dict[str, int] = {}
    for svg in svgs:
        for method, colours in curve_colours_in_svg(svg).items():
            seen.setdefault(method, set()).update(colours)
            plots_per_method[method] = plots_per_method.get(method, 0) + 1
    assert set(seen) == set(SIX_METHODS)
    assert {method: colours for method, colours in seen.items()} == {m: {METHOD_COLOURS[m]} for m in SIX_METHODS}
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    assert plots_per_method["espl"] == 6 and plots_per_method["base"] == 5  # aime's base: one eval, no reward


def test_the_colours_are_the_artists_colours(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Read from the matplotlib figures as they are saved: a method missing from a plot
    (base draws no reward curve) does not shift the others' colours."""
    drawn: list[dict[str, str]] = []
    real_save = plots.save
    bands = 0

    def save(figure, stem):  # noqa: ANN001, ANN202
        nonlocal bands
        axes = figure.axes[0]
        artists = [*axes.get_lines(), *axes.collections, *axes.patches]
        colours = {}
        for artist in artists:
            gid = artist.get_gid() or ""
            if gid.startswith("curve-"):
                colours[gid.removeprefix("curve-")] = to_hex(artist.get_color())
            elif gid.startswith("band-"):  # a PolyCollection (fill_between) or a Rectangle (axhspan)
                face = artist.get_facecolors()[0] if hasattr(artist, "get_facecolors") else artist.get_facecolor()
                assert to_hex(face) == method_colour(gid.removeprefix("band-"))
                bands += 1
        drawn.append(colours)
        real_save(figure, stem)

    monkeypatch.setattr(plots, "save", save)
    write_leaderboard([write_small_suite(tmp_path / "runs")], tmp_path / "out" / "small")
    curve_plots = [colours for colours in drawn if colours]
    assert len(curve_plots) == 3 and bands == 5  # espl and rl on two plots, base on one
    assert {frozenset(c) for c in curve_plots} == {frozenset({"espl", "rl"}), frozenset({"base"})}
    for colours in curve_plots:
        assert colours == {method: METHOD_COLOURS[method] for method in colours}


def test_a_plugin_method_gets_a_colour_of_its_own_that_every_process_agrees_on() -> None:
    code = "from espl.leaderboard.colours import method_colour; print(method_colour('my-method'))"
    answers = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                       env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout.strip()
        for seed in ("1", "2")
    }
    assert answers == {method_colour("my-method")}
    assert method_colour("my-method") in OTHER_COLOURS
    names = [f"plugin-{i}" for i in range(40)]
    assert not {method_colour(n) for n in names} & set(METHOD_COLOURS.values())
    assert len({method_colour(n) for n in names}) > 5  # spread over the pool, not one colour for all


def tick_texts(figure) -> list[str]:  # noqa: ANN001
    figure.canvas.draw()
    axes = figure.axes[0]
    texts = [t.get_text() for t in (*axes.get_yticklabels(), *axes.get_xticklabels())]
    return texts + [axes.yaxis.get_offset_text().get_text(), axes.xaxis.get_offset_text().get_text()]


def scientific(texts: list[str]) -> list[str]:
    return [t for t in texts if re.search(r"e[-\u2212+]?\d", t)]


@pytest.mark.parametrize("percent", [False, True])
def test_a_flat_series_has_plain_tick_labels_and_a_readable_range(percent: bool) -> None:
    flat = [Curve("rl (n=3)", (1, 2), (0.0, -1.4e-17), (0.0, 0.0), "rl"),
            Curve("espl (n=3)", (1, 2), (0.0, 0.0), (0.0, 0.0), "espl")]
    figure = plots.curve_figure(flat, "flat", "train reward", percent)
    texts = tick_texts(figure)
    assert not scientific(texts), texts
    bottom, top = figure.axes[0].get_ylim()
    assert top - bottom == pytest.approx(plots.MIN_SPAN_PERCENT if percent else plots.MIN_SPAN)
    assert bottom < 0 < top and abs(bottom) < (top - bottom) / 10  # zero sits just above the bottom
    assert [t for t in texts[:-2] if t]  # labelled ticks exist


def test_the_flat_series_check_sees_matplotlibs_default_offset() -> None:
    """Without the fixes matplotlib labels this data with a `1e-17` offset: the check above can fail."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.plot([1, 2], [0.0, -1.4e-17])
    assert scientific(tick_texts(figure))
    plt.close(figure)


def test_a_varying_series_keeps_its_own_range() -> None:
    curve = Curve("rl (n=3)", (0, 2), (0.1, 0.6), (0.05, 0.05), "rl")
    figure = plots.curve_figure([curve], "varying", "test accuracy (%)", True)
    bottom, top = figure.axes[0].get_ylim()
    assert bottom <= 5.0 and top >= 65.0 and top - bottom < 80.0
    assert not scientific(tick_texts(figure))


def test_the_built_board_reward_plot_of_all_zero_rewards_has_no_offset(boards: dict[str, Path]) -> None:
    svg = (boards["cpu"] / "reward-hotpotqa-comparison.svg").read_text()
    texts = re.findall(r"<!-- (.*?) -->", svg)
    assert "0.000" in texts and not scientific(texts), texts


def test_a_lineage_is_drawn_only_where_an_evaluated_prompt_has_a_parent(boards: dict[str, Path]) -> None:
    """On hotpotqa the evolving runs created candidates but evaluated their seed prompt."""
    out = boards["cpu"]
    assert (out / "lineage-arithmetic.svg").exists() and not (out / "lineage-hotpotqa-comparison.svg").exists()
    markdown = out.with_suffix(".md").read_text()
    hotpotqa = markdown.split("## hotpotqa-comparison")[1]
    assert "Best evolved prompt" not in hotpotqa and "lineage-" not in hotpotqa
    assert "(espl, evolution) evaluated a prompt with a parent" in hotpotqa
    assert "### Best evolved prompt: p0002" in markdown.split("## arithmetic")[1]
    html = out.with_suffix(".html").read_text()
    assert html.count('<figure class="lineage">') == 1 and "there is no lineage to show" in html


def test_a_run_of_rl_alone_has_no_lineage_and_no_note(tmp_path: Path) -> None:
    from leaderboard_runs import shared_config, write_run

    write_run(tmp_path / "runs", "gsm8k", "rl", 0, [0.1, 0.3], config=shared_config("gsm8k"))
    out = write_leaderboard([tmp_path / "runs"], tmp_path / "lb" / "rl").out
    markdown = out.with_suffix(".md").read_text()
    assert "lineage" not in markdown.split("## gsm8k")[1] and not list(out.glob("lineage-*"))


LINK = re.compile(r"\]\(([^)\s]+)\)|(?:src|href)=\"([^\"]+)\"")


def local_links(text: str) -> list[str]:
    """Markdown link and image targets and HTML src/href values that name a file (not a
    `data:` URI, a fragment inside the page or a web address)."""
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not t.startswith(("data:", "#", "http://", "https://", "mailto:"))]


def test_a_built_board_links_only_to_its_own_files(boards: dict[str, Path]) -> None:
    for out in boards.values():
        for page in (out.with_suffix(".md"), out.with_suffix(".html")):
            for link in local_links(page.read_text()):
                target = (page.parent / link).resolve()
                assert target.is_file() and target.is_relative_to(out.resolve()), (page.name, link)
        assert local_links(out.with_suffix(".md").read_text())  # the plots are linked


def test_the_committed_boards_link_only_to_committed_files() -> None:
    pages = sorted([*(REPO / "leaderboards").glob("*.md"), *(REPO / "leaderboards").glob("*.html")])
    assert pages
    git = subprocess.run(["git", "-C", str(REPO), "ls-files", "leaderboards"], capture_output=True, text=True)
    tracked = {REPO / line for line in git.stdout.splitlines()} if git.returncode == 0 else None
    for page in pages:
        for link in local_links(page.read_text()):
            target = Path(os.path.normpath(page.parent / link))
            resolved = target.resolve()
            assert resolved.is_file() and resolved.is_relative_to((REPO / "leaderboards").resolve()), (page.name, link)
            if tracked is not None:  # a git checkout: the file must be committed, not just present here
                assert target in tracked, (page.name, link)
