"""Average precision at IoU 0.5 (VOC style), precision and recall at a threshold, and bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.detection.boxes import centres, iou_matrix


def match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5
          ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy VOC matching, best score first: a detection is a true positive when it overlaps a
    not-yet-matched true box by at least `iou_threshold`. Returns (scores, hits) in score order."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4)[order], np.asarray(scores, np.float64)[order]
    overlaps = iou_matrix(boxes, truth)
    taken = np.zeros(len(truth), dtype=bool)
    hits = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if len(truth) == 0:
            break
        candidates = np.where(taken, -1.0, overlaps[i])
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            taken[best] = hits[i] = True
    return scores, hits


def average_precision(scores: np.ndarray, hits: np.ndarray, num_truth: int) -> float:
    """Area under the precision-recall curve with precision made monotone (VOC 2010+, all points)."""
    if num_truth == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(hits, bool)[order]
    true_positives = np.cumsum(hits)
    recall = true_positives / num_truth
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def precision_recall(scores: np.ndarray, hits: np.ndarray, num_truth: int, threshold: float) -> tuple[float, float]:
    kept = np.asarray(scores) >= threshold
    found = int(np.asarray(hits)[kept].sum())
    precision = found / int(kept.sum()) if kept.any() else 1.0
    return precision, (found / num_truth if num_truth else float("nan"))


@dataclass
class ImageResult:
    """One evaluated image: its detections (matched) and its true boxes."""

    boxes: np.ndarray
    scores: np.ndarray
    hits: np.ndarray
    truth: np.ndarray


def evaluate_images(predictions: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray],
                    iou_threshold: float = 0.5) -> list[ImageResult]:
    results = []
    for (boxes, scores), truth in zip(predictions, truths, strict=True):
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        sorted_scores, hits = match(boxes, scores, truth, iou_threshold)
        results.append(ImageResult(np.asarray(boxes).reshape(-1, 4)[order], sorted_scores, hits, truth))
    return results


def pooled_ap(results: list[ImageResult]) -> float:
    scores = np.concatenate([r.scores for r in results]) if results else np.zeros(0)
    hits = np.concatenate([r.hits for r in results]) if results else np.zeros(0, bool)
    return average_precision(scores, hits, sum(len(r.truth) for r in results))


def bootstrap_ap(results: list[ImageResult], block: int = 128, samples: int = 1000, seed: int = 0
                 ) -> tuple[float, float]:
    """95 % interval of the pooled AP, resampling square blocks of the images with replacement.

    The held-out sets are two images each, too few to resample images; blocks of `block` pixels
    (each detection and true box belongs to the block holding its centre) carry both the trees and
    the detections, matched once on the whole image."""
    cells: list[tuple[np.ndarray, np.ndarray, int]] = []
    for result in results:
        det_keys = [tuple(k) for k in (centres(result.boxes) // block).astype(int)]
        truth_keys = [tuple(k) for k in (centres(result.truth) // block).astype(int)]
        for key in sorted(set(det_keys) | set(truth_keys)):
            chosen = np.array([k == key for k in det_keys], bool)
            cells.append((result.scores[chosen], result.hits[chosen], sum(k == key for k in truth_keys)))
    if not cells:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        picked = [cells[i] for i in rng.integers(0, len(cells), len(cells))]
        num_truth = sum(c[2] for c in picked)
        if num_truth == 0:
            continue
        values.append(average_precision(np.concatenate([c[0] for c in picked]),
                                        np.concatenate([c[1] for c in picked]), num_truth))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
