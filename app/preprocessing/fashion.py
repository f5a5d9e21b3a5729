"""Prepare a photo of one clothing item the way Fashion-MNIST's images were made.

Fashion-MNIST (Xiao et al. 2017): product photos on a light background, trimmed to the item,
the longest edge resized to 28 pixels keeping the aspect ratio, centred on a 28x28 canvas and
negated, so the item is light on a black background and fills the frame along its long side.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.errors import BadInput
from app.preprocessing.images import to_gray

SIDE = 28
TRIM = 0.1  # fraction of the item's contrast below which a pixel is background, trimmed away
MIN_CONTRAST = 16.0  # grey levels between background and item; below it the image is blank


def item_on_black(gray: np.ndarray) -> np.ndarray:
    """Grey levels → item in [0, 1] on 0, inverting when the background (the border) is light.

    Contrast is not stretched: as in the dataset, a white shirt photographed on white stays dim.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray, border = 255.0 - gray, 255.0 - border
    background = float(np.median(border))
    if float(gray.max()) - background < MIN_CONTRAST:
        raise BadInput("no item found: the image has no contrast between the item and its background")
    return np.clip((gray - background) / (255.0 - background), 0.0, 1.0)


def crop_to_item(item: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(item > TRIM * item.max())
    return item[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def fit_frame(item: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Longest edge to `side` pixels keeping the aspect ratio, centred on a black square."""
    height, width = item.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(item.astype(np.float32), mode="F").resize(size, Image.LANCZOS))
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = np.clip(resized, 0.0, 1.0)
    return canvas


def prepare_fashion_item(image: Image.Image) -> np.ndarray:
    """Any photo of one item → a 28x28x1 float32 array in [0, 1], Fashion-MNIST-style."""
    return fit_frame(crop_to_item(item_on_black(to_gray(image))))[..., None]
