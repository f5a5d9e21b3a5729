"""Plots of an anomaly detector saved with its run: errors by class, the threshold sweep, reconstructions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.plots import plt
from training.thresholds import binary_metrics


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_error_histograms(errors: np.ndarray, labels: np.ndarray, threshold: float, path: Path, title: str) -> Path:
    """Reconstruction errors of normal vs anomalous records (log-spaced bins) and the threshold line."""
    labels = np.asarray(labels).astype(bool)
    positive = np.asarray(errors)[np.asarray(errors) > 0]
    bins = np.geomspace(positive.min(), positive.max(), 60)
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(errors[~labels], bins=bins, alpha=0.6, label=f"normal ({int((~labels).sum())})")
    axes.hist(errors[labels], bins=bins, alpha=0.6, label=f"anomalous ({int(labels.sum())})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4f}")
    axes.set_xscale("log")
    axes.set_xlabel("reconstruction error (mean squared, normalised units)")
    axes.set_ylabel("records")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def plot_threshold_sweep(
    errors: np.ndarray, labels: np.ndarray, marked: dict[str, float], path: Path, title: str
) -> Path:
    """Accuracy, precision and recall as the threshold moves, with the named thresholds marked."""
    grid = np.geomspace(np.percentile(errors, 1), np.percentile(errors, 99.5), 200)
    rows = [binary_metrics(errors, labels, t) for t in grid]
    figure, axes = plt.subplots(figsize=(7, 4))
    for metric in ("accuracy", "precision", "recall"):
        axes.plot(grid, [row[metric] for row in rows], label=metric)
    for (name, value), style in zip(marked.items(), ("--", ":", "-.", (0, (1, 4))), strict=False):
        axes.axvline(value, color="black", linestyle=style, label=f"{name} = {value:.4f}")
    axes.set_xscale("log")
    axes.set_xlabel("threshold (reconstruction error)")
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(fontsize=8, loc="lower left")
    return _save(figure, path)


def plot_reconstructions(
    records: np.ndarray, reconstructions: np.ndarray, errors: np.ndarray, labels: np.ndarray,
    threshold: float, path: Path, per_class: int = 3,
) -> Path:
    """The first few normal and anomalous records drawn against their reconstructions."""
    labels = np.asarray(labels).astype(bool)
    chosen = [*np.flatnonzero(~labels)[:per_class], *np.flatnonzero(labels)[:per_class]]
    figure, grid = plt.subplots(2, per_class, figsize=(4 * per_class, 6), sharey=True, squeeze=False)
    for axes, index in zip(grid.flat, chosen, strict=False):
        axes.plot(records[index], label="record")
        axes.plot(reconstructions[index], label="reconstruction")
        axes.fill_between(np.arange(records.shape[1]), records[index], reconstructions[index], alpha=0.2, color="red")
        kind = "anomalous" if labels[index] else "normal"
        flagged = "flagged" if errors[index] > threshold else "passed"
        axes.set_title(f"{kind}: error {errors[index]:.3f} ({errors[index] / threshold:.1f}x, {flagged})", fontsize=9)
    grid.flat[0].legend(fontsize=8)
    return _save(figure, path)
