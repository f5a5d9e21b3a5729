"""Scoring an anomaly detector from its errors: ROC AUC, metrics at a threshold, and the threshold rule.

Every function takes per-record anomaly scores (reconstruction errors) and labels (1 = anomalous);
a record is flagged when its score is strictly over the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_VALIDATION_ACCURACY = "max_validation_accuracy"


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random anomalous record scores over a random normal one (ties count half)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("ROC AUC needs both normal and anomalous records")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties, so equal scores count half.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of `score > threshold` as the anomaly call."""
    predicted = np.asarray(scores) > threshold
    actual = np.asarray(labels).astype(bool)
    true_pos = int(np.sum(predicted & actual))
    false_pos = int(np.sum(predicted & ~actual))
    false_neg = int(np.sum(~predicted & actual))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(predicted == actual)), "precision": precision, "recall": recall, "f1": f1}


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores: every different way of splitting them."""
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    return (distinct[:-1] + distinct[1:]) / 2.0


def max_accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The candidate threshold with the highest accuracy on (validation) scores and labels.

    Ties go to the middle one of the tied candidates, so the choice does not hug either class.
    """
    candidates = candidate_thresholds(scores)
    if len(candidates) == 0:
        raise ValueError("need at least two distinct scores to place a threshold between them")
    predicted = np.asarray(scores)[None, :] > candidates[:, None]
    accuracy = np.mean(predicted == np.asarray(labels).astype(bool)[None, :], axis=1)
    tied = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[tied[len(tied) // 2]])


def normal_percentile_threshold(scores: np.ndarray, labels: np.ndarray, percentile: float) -> float:
    """The `percentile`-th percentile of the scores of normal records (needs no anomalous labels)."""
    normal = np.asarray(scores)[~np.asarray(labels).astype(bool)]
    return float(np.percentile(normal, percentile))


def threshold_table(
    validation: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray] | None,
    thresholds: dict[str, float],
) -> list[dict[str, Any]]:
    """For each named threshold: its value and metrics on validation (and test, to report only)."""
    rows = []
    for name, threshold in thresholds.items():
        row: dict[str, Any] = {"rule": name, "threshold": threshold}
        row.update({f"validation_{k}": v for k, v in binary_metrics(*validation, threshold).items()})
        if test is not None:
            row.update({f"test_{k}": v for k, v in binary_metrics(*test, threshold).items()})
        rows.append(row)
    return rows
