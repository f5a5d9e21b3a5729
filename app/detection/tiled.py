"""Detect in an image of any size: cut it into the model's tiles, decode each tile, merge across tiles.

Used by `POST /detect` and by the trees model's evaluation, so both see the same tiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.detection.boxes import merge_tiles
from app.detection.centernet import decode
from app.preprocessing.colours import match_colours
from app.preprocessing.tiling import cut_tiles, tile_cores

# A detector's tiles per model call, in /detect and in evaluation: an upload of hundreds of tiles
# (each in up to four mirror views) runs in pieces, so its activations stay within a few hundred MB.
TILES_PER_CALL = 16


@dataclass(frozen=True)
class TiledImage:
    batch: np.ndarray  # (N, tile, tile, 3) float32, the model's input
    origins: list[tuple[int, int]]
    cores: list[tuple[float, float, float, float]]
    width: int  # of the image the tiles were cut from (after `upscale`)
    height: int
    upscale: float = 1.0  # the image was enlarged by this before tiling; boxes are divided back


def normalise(pixels: np.ndarray, mean: float = 127.0, scale: float = 128.0) -> np.ndarray:
    """uint8 RGB → the EfficientNet-Lite input range, (x - mean) / scale."""
    return (np.asarray(pixels, np.float32) - mean) / scale


def enlarge(rgb: np.ndarray, upscale: float) -> np.ndarray:
    """Small objects get more feature cells when the image is enlarged first (bilinear)."""
    if upscale == 1.0:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * upscale)), max(1, round(height * upscale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def tile_for_model(rgb: np.ndarray, tile: int, overlap: int, mean: float = 127.0, scale: float = 128.0,
                   upscale: float = 1.0, colour_reference: np.ndarray | None = None) -> TiledImage:
    """An (H, W, 3) uint8 RGB image → the batch of normalised tiles and where each one sits.

    With `colour_reference`, the image's colours are first matched to it (`match_colours`)."""
    if colour_reference is not None:
        rgb = match_colours(rgb, colour_reference)
    rgb = enlarge(rgb, upscale)
    height, width = rgb.shape[:2]
    tiles, origins = cut_tiles(rgb, tile, overlap)
    return TiledImage(normalise(tiles, mean, scale), origins, tile_cores(origins, tile, width, height), width, height,
                      upscale)


def tile_as_manifest(rgb: np.ndarray, fields: Mapping[str, Any], preprocessing: Mapping[str, Any] | None = None
                     ) -> TiledImage:
    """`tile_for_model` with what a detector's manifest prescribes (its `detection` fields and its
    `preprocessing`): the one place `/detect` and the evaluation turn a manifest into tiles."""
    preprocessing = preprocessing or {}
    return tile_for_model(rgb, fields["tile"], fields["overlap"], preprocessing.get("mean", 127.0),
                          preprocessing.get("scale", 128.0), fields.get("upscale", 1.0),
                          fields.get("colour_reference"))


def detections_from_outputs(
    outputs: np.ndarray, tiled: TiledImage, stride: int, score_threshold: float, nms_iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's (N, rows, cols, 5) outputs for the tiles → boxes (x1, y1, x2, y2) in the original
    image's pixels and scores, best first."""
    per_tile = []
    for output, (left, top) in zip(outputs, tiled.origins, strict=True):
        boxes, scores = decode(np.asarray(output), stride, score_threshold)
        per_tile.append((boxes + np.array([left, top, left, top], np.float64), scores))
    boxes, scores = merge_tiles(per_tile, tiled.cores, tiled.width, tiled.height, nms_iou)
    order = np.argsort(-scores, kind="stable")
    return boxes[order] / tiled.upscale, scores[order]
