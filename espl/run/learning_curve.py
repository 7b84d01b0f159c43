"""`learning_curve.png` in every run directory: train reward and test accuracy per iteration.

The figure a user looks at first: whether the run learned is easier to see than to read. It
is drawn from `metrics.jsonl` alone (so a resumed or extended run redraws it whole), with
matplotlib's Agg backend and no timestamps in the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LEARNING_CURVE = "learning_curve.png"


def write_learning_curve(path: Path, records: Sequence[Mapping[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(int(r["iteration"]), float(r["train_reward"])) for r in records if "train_reward" in r]
    test = [(int(r["iteration"]), float(r["eval"]["accuracy"])) for r in records
            if isinstance(r.get("eval"), Mapping) and "accuracy" in r["eval"]]
    figure, axes = plt.subplots(figsize=(6.0, 3.4), layout="constrained")
    if train:
        axes.plot(*zip(*train), marker="o", markersize=3, label="train reward (mean)")
    if test:
        axes.plot(*zip(*test), marker="s", markersize=4, label="test accuracy")
    axes.set_xlabel("iteration")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(title, fontsize=9)
    if train or test:
        axes.legend(fontsize=8, loc="best")
    iterations = sorted({i for i, _ in train + test})
    if iterations:
        axes.set_xticks(iterations if len(iterations) <= 20 else iterations[:: max(1, len(iterations) // 10)])
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
