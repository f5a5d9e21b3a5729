"""Test-time flips for the CenterNet-style detector: the same tiles seen mirrored, outputs averaged.

The detector was trained on tiles and their left-right, top-bottom and both-way mirror images, so
each mirror is an equally valid view of a tile. Running them as extra rows of the same batch and
averaging the outputs, each flipped back into the tile's own frame, steadies the heat peaks and
the box sizes: on the held-out NEON strips it lifted AP@0.5 from 0.431 to 0.506 (docs/trees.md).
It costs one model pass per view, so `/detect` lets a request ask for fewer.

Flipping back a left-right mirror: cells reverse along the columns, and a centre at `cx` cells
from the left edge of a grid `W` cells wide was seen at `W - cx`, so its offset within its cell,
`cx - floor(cx)`, was seen as `1 - offset`. Likewise for rows and the y offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# (left-right, top-bottom) mirrors, in the order views are added: 1, 2 or 4 of them
FLIPS = ((False, False), (True, False), (False, True), (True, True))
VIEW_COUNTS = (1, 2, 4)
OFFSET_X, OFFSET_Y = 1, 2  # output channels that a mirror turns into 1 - value


def view_count(fields: Mapping[str, Any], asked: int | None = None) -> int:
    """Views to run: the request's, else the manifest's `detection.flip_views` (default 1)."""
    views = asked if asked is not None else fields.get("flip_views", 1)
    if isinstance(views, bool) or not isinstance(views, int) or views not in VIEW_COUNTS:
        raise ValueError(f"flip views must be 1, 2 or 4, not {views!r}")
    return views


def mirrored(x: np.ndarray, left_right: bool, top_bottom: bool) -> np.ndarray:
    """(N, rows, cols, C) images or outputs, mirrored along columns and/or rows."""
    if left_right:
        x = x[:, :, ::-1]
    if top_bottom:
        x = x[:, ::-1]
    return x


def with_mirrors(tiles: np.ndarray, views: int) -> np.ndarray:
    """The tiles followed by their mirror images: `views` blocks of N rows, one model batch."""
    if views == 1:
        return tiles
    return np.concatenate([mirrored(tiles, *flip) for flip in FLIPS[:views]])


def mirrored_rows(tiles: np.ndarray, views: int, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of `with_mirrors(tiles, views)`, made without the others: a detection run in
    pieces never holds all its views at once (four views of 676 tiles are 532 MB, 1.8 s to copy)."""
    count = len(tiles)
    parts = [mirrored(tiles[max(start - view * count, 0):min(stop - view * count, count)], *FLIPS[view])
             for view in range(start // count, (stop - 1) // count + 1)]
    return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])


def unmirrored_output(output: np.ndarray, left_right: bool, top_bottom: bool) -> np.ndarray:
    """A mirrored tile's (N, rows, cols, 5) output in the tile's own frame."""
    output = np.array(mirrored(output, left_right, top_bottom), dtype=np.float32)
    if left_right:
        output[..., OFFSET_X] = 1.0 - output[..., OFFSET_X]
    if top_bottom:
        output[..., OFFSET_Y] = 1.0 - output[..., OFFSET_Y]
    return output


def averaged_views(outputs: np.ndarray, views: int) -> np.ndarray:
    """The model's outputs for `with_mirrors(tiles, views)` → one output per tile, views averaged."""
    if views == 1:
        return np.asarray(outputs)
    parts = np.split(np.asarray(outputs), views)
    return np.mean([unmirrored_output(part, *flip) for part, flip in zip(parts, FLIPS[:views], strict=True)],
                   axis=0)
