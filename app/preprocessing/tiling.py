"""Cut a large image into fixed-size overlapping tiles (training and serving cut it the same way)."""

from __future__ import annotations

import numpy as np


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length): every `stride`, the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(left, top) of every tile, row by row."""
    stride = tile - overlap
    return [(left, top) for top in tile_starts(height, tile, stride) for left in tile_starts(width, tile, stride)]


def tile_cores(origins: list[tuple[int, int]], tile: int, width: int, height: int
               ) -> list[tuple[float, float, float, float]]:
    """The part of the image each tile owns: cut halfway through its overlap with each neighbour."""
    lefts = sorted({left for left, _ in origins})
    tops = sorted({top for _, top in origins})

    def bounds(starts: list[int], length: int) -> dict[int, tuple[float, float]]:
        result = {}
        for i, start in enumerate(starts):
            low = 0.0 if i == 0 else (start + min(starts[i - 1] + tile, length)) / 2
            high = float(length) if i == len(starts) - 1 else (starts[i + 1] + min(start + tile, length)) / 2
            result[start] = (low, high)
        return result

    columns, rows = bounds(lefts, width), bounds(tops, height)
    return [(columns[left][0], rows[top][0], columns[left][1], rows[top][1]) for left, top in origins]


def cut_tiles(pixels: np.ndarray, tile: int, overlap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """An (H, W, C) array → (N, tile, tile, C) tiles and their origins; an image smaller than a
    tile is padded with zeros at the bottom/right."""
    height, width = pixels.shape[:2]
    padded = np.zeros((max(height, tile), max(width, tile), *pixels.shape[2:]), pixels.dtype)
    padded[:height, :width] = pixels
    origins = tile_grid(width, height, tile, overlap)
    tiles = np.stack([padded[top:top + tile, left:left + tile] for left, top in origins])
    return tiles, origins
