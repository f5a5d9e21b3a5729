"""The trees run's loss plot: one curve per stage and variant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_stages(history: list[dict[str, Any]], path: Path) -> Path:
    curves: dict[str, list[float]] = defaultdict(list)
    for row in history:
        curves[row.get("stage", "")].append(row["loss"])
    figure, axes = plt.subplots(figsize=(7, 4))
    for stage, losses in curves.items():
        axes.plot(range(1, len(losses) + 1), losses, marker="o", label=stage)
    axes.set_xlabel("epoch within stage")
    axes.set_ylabel("training loss (focal + L1)")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("trees: loss per stage")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
