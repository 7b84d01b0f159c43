"""Matplotlib figures (Agg backend) saved byte-for-byte reproducibly as PNG and SVG.

Reproducible output is what lets `espl-bench compare` rerun on a finished suite and leave the
files unchanged: SVG ids are salted with a constant and no file carries a creation date.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from espl.leaderboard.colours import method_colour  # noqa: E402
from espl.leaderboard.curves import Curve  # noqa: E402
from espl.leaderboard.lineage import Lineage  # noqa: E402

STYLE = {
    "svg.hashsalt": "espl-bench",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
OPERATOR_COLOURS = {"seed": "#d9e7f5", "mutation": "#fde2c4", "crossover": "#d8f0d2"}


def save(figure: Figure, stem: Path) -> None:
    """Write `<stem>.png` and `<stem>.svg` and free the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        figure.savefig(stem.with_suffix(".png"), dpi=110, metadata={"Software": None})
        figure.savefig(stem.with_suffix(".svg"), metadata={"Date": None, "Creator": None})
    plt.close(figure)


def curve_figure(curves: Sequence[Curve], title: str, ylabel: str, percent: bool) -> Figure:
    """One line per method with a shaded ± one standard error band, in the method's colour.

    Each method's line and band carry the SVG id `curve-<method>` / `band-<method>`, so the
    colour a method was drawn in can be read back from the file.
    """
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
        scale = 100.0 if percent else 1.0
        levels: list[float] = []
        for curve in curves:
            colour, gid = method_colour(curve.method), svg_id(curve.method)
            mean = [m * scale for m in curve.mean]
            low = [(m - s) * scale for m, s in zip(curve.mean, curve.se)]
            high = [(m + s) * scale for m, s in zip(curve.mean, curve.se)]
            levels += [*low, *high]
            if len(curve.iterations) == 1:  # evaluated once (e.g. `base`): a reference level
                axes.axhline(mean[0], color=colour, linestyle="--", linewidth=1.2, label=curve.label, gid=f"curve-{gid}")
                axes.axhspan(low[0], high[0], color=colour, alpha=0.12, linewidth=0, gid=f"band-{gid}")
                continue
            axes.plot(curve.iterations, mean, marker="o", markersize=3, color=colour, label=curve.label,
                      gid=f"curve-{gid}")
            axes.fill_between(curve.iterations, low, high, color=colour, alpha=0.18, linewidth=0, gid=f"band-{gid}")
        if all(len(c.iterations) == 1 for c in curves):
            iterations = sorted({c.iterations[0] for c in curves})
            axes.set_xlim(iterations[0] - 0.5, iterations[-1] + 0.5)
            axes.set_xticks(iterations)
        else:
            axes.xaxis.get_major_locator().set_params(integer=True)
        if levels:
            widen_flat_range(axes, levels, MIN_SPAN_PERCENT if percent else MIN_SPAN)
        axes.ticklabel_format(axis="both", style="plain", useOffset=False)
        axes.set_title(title)
        axes.set_xlabel("iteration")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if curves:
            axes.legend(frameon=False, fontsize=8)
    return figure


MIN_SPAN_PERCENT = 10.0
MIN_SPAN = 0.2
"""The least y-range a curve plot shows (percentage points / reward units). A flat series
(all-zero rewards) would otherwise get an axis zoomed onto float rounding, labelled `1e-17`."""


def widen_flat_range(axes: Axes, levels: Sequence[float], minimum: float) -> None:
    """Give data spanning less than `minimum` a y-range of `minimum` around it; data that is
    non-negative but for rounding starts the range just below 0 instead of going negative."""
    low, high = min(levels), max(levels)
    if high - low >= minimum:
        return
    bottom = (low + high - minimum) / 2.0
    if low > -minimum * 1e-6:
        bottom = max(bottom, -0.05 * minimum)
    axes.set_ylim(bottom, bottom + minimum)


def svg_id(method: str) -> str:
    """A method name as a valid SVG id fragment."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in method)


def lineage_figure(lineage: Lineage, title: str) -> Figure:
    """The ancestors DAG, oldest generation on top, each node with id, operator, step and rating."""
    depths = lineage.depths()
    layers: dict[int, list[str]] = {}
    for node_id in sorted(lineage.nodes, key=lambda n: (lineage.nodes[n].step, n)):
        layers.setdefault(depths[node_id], []).append(node_id)
    width = max(len(ids) for ids in layers.values())
    position = {
        node_id: (index - (len(ids) - 1) / 2.0, -depth)
        for depth, ids in layers.items()
        for index, node_id in enumerate(ids)
    }
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(
            figsize=(max(4.0, 2.0 * width + 1.0), max(2.5, 1.25 * len(layers) + 0.8)), layout="constrained"
        )
        for parent, child in lineage.edges:
            skips = depths[child] - depths[parent] > 1  # bend around the generations in between
            axes.annotate(
                "", xy=position[child], xytext=position[parent],
                arrowprops={"arrowstyle": "-|>", "color": "#555555", "shrinkA": 22, "shrinkB": 22, "linewidth": 1.0,
                            "connectionstyle": "arc3,rad=0.45" if skips else "arc3,rad=0"},
            )
        for node_id, (x, y) in position.items():
            node = lineage.nodes[node_id]
            edge = "#c0392b" if node_id == lineage.prompt_id else "#555555"
            axes.text(
                x, y, node.label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.4", "facecolor": OPERATOR_COLOURS.get(node.operator, "#eeeeee"),
                      "edgecolor": edge, "linewidth": 1.6 if node_id == lineage.prompt_id else 0.8},
            )
        axes.set_xlim(-width / 2.0 - 0.2, width / 2.0 + 0.2)
        axes.set_ylim(-(len(layers) - 1) - 0.6, 0.6)
        axes.set_axis_off()
        axes.set_title(title)
    return figure
