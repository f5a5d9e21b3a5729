"""Plots saved with a run (PNG, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

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
