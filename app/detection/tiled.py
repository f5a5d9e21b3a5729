"""Detect in an image of any size: cut it into the model's tiles, decode each tile, merge across tiles.

Used by `POST /detect` and by the trees model's evaluation, so both see the same tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.detection.boxes import merge_tiles
from app.detection.centernet import decode
from app.preprocessing.tiling import cut_tiles, tile_cores


@dataclass(frozen=True)
class TiledImage:
    batch: np.ndarray  # (N, tile, tile, 3) float32, the model's input
    origins: list[tuple[int, int]]
    cores: list[tuple[float, float, float, float]]
    width: int
    height: int


def normalise(pixels: np.ndarray, mean: float = 127.0, scale: float = 128.0) -> np.ndarray:
    """uint8 RGB → the EfficientNet-Lite input range, (x - mean) / scale."""
    return (np.asarray(pixels, np.float32) - mean) / scale


def tile_for_model(rgb: np.ndarray, tile: int, overlap: int, mean: float = 127.0, scale: float = 128.0) -> TiledImage:
    """An (H, W, 3) uint8 RGB image → the batch of normalised tiles and where each one sits."""
    height, width = rgb.shape[:2]
    tiles, origins = cut_tiles(rgb, tile, overlap)
    return TiledImage(normalise(tiles, mean, scale), origins, tile_cores(origins, tile, width, height), width, height)


def detections_from_outputs(
    outputs: np.ndarray, tiled: TiledImage, stride: int, score_threshold: float, nms_iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's (N, rows, cols, 5) outputs for the tiles → boxes (x1, y1, x2, y2) in image pixels
    and scores, best first."""
    per_tile = []
    for output, (left, top) in zip(outputs, tiled.origins, strict=True):
        boxes, scores = decode(np.asarray(output), stride, score_threshold)
        per_tile.append((boxes + np.array([left, top, left, top], np.float64), scores))
    boxes, scores = merge_tiles(per_tile, tiled.cores, tiled.width, tiled.height, nms_iou)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]
