"""Plots saved with a run (PNG, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict[str, Any]], path: Path, metric: str = "loss", title: str = "") -> Path:
    """Train vs validation `metric` per epoch."""
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(epochs, [row.get(metric) for row in history], marker="o", label=f"train {metric}")
    if any(f"val_{metric}" in row for row in history):
        axes.plot(epochs, [row.get(f"val_{metric}") for row in history], marker="o", label=f"validation {metric}")
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(title or f"{metric} per epoch")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    """Counts per (true, predicted) class; the diagonal is what the model got right."""
    counts = np.asarray(matrix)
    side = max(5.0, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(side + 1, side))
    shown = axes.imshow(counts, cmap="Blues")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title or "confusion matrix")
    if len(labels) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            axes.text(col, row, str(value), ha="center", va="center", fontsize=8,
                      color="white" if value > threshold else "black")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
