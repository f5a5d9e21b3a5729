"""Colour matching: give every image the colour distribution of a reference (histogram matching).

A detector trained on one forest sees another forest's images lit and coloured differently (bright
sand, grey crowns, another sensor's balance). Mapping each image's per-channel histogram onto the
training images' before detection removes most of that difference; training and serving apply the
same mapping, with the reference stored in the model's manifest.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

LEVELS = 65  # quantiles 0, 1/64, ..., 1 per channel describe a reference


def colour_reference(images: Iterable[np.ndarray], levels: int = LEVELS) -> np.ndarray:
    """(3, levels) per-channel quantiles of every pixel of these (H, W, 3) uint8 images together."""
    counts = np.zeros((3, 256), np.float64)
    for image in images:
        for channel in range(3):
            counts[channel] += np.bincount(np.asarray(image)[..., channel].ravel(), minlength=256)
    return np.stack([quantiles_from_counts(c, levels) for c in counts])


def quantiles_from_counts(counts: np.ndarray, levels: int) -> np.ndarray:
    """Quantiles at `levels` even steps of a 256-bin histogram, interpolated between grey levels."""
    cdf = np.cumsum(counts) / counts.sum()
    steps = np.linspace(0.0, 1.0, levels)
    return np.interp(steps, np.concatenate([[0.0], cdf]), np.arange(257) - 0.5).clip(0, 255)


def match_colours(rgb: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → the same image with each channel's histogram mapped onto `reference`'s.

    Each grey level goes to the reference's value at the level's mid-rank in this image, so the
    mapping keeps the order of values (dark stays darker) and costs one table lookup per pixel."""
    reference = np.asarray(reference, np.float64)
    steps = np.linspace(0.0, 1.0, reference.shape[1])
    out = np.empty_like(rgb)
    for channel in range(3):
        values = rgb[..., channel]
        counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
        mid_rank = (np.cumsum(counts) - counts / 2) / counts.sum()
        table = np.interp(mid_rank, steps, reference[channel])
        out[..., channel] = np.round(table).clip(0, 255).astype(np.uint8)[values]
    return out
