"""Prepare a photo or scan of one handwritten digit the way MNIST's digits were made.

MNIST: light ink on black, the digit fitted into a 20x20 box keeping its aspect ratio,
anti-aliased, then placed in 28x28 so that its centre of mass is at the centre.
Written with few, whole-array operations: it runs once per request on the serving path.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from app.errors import BadInput
from app.preprocessing.images import to_gray

SIDE, BOX = 28, 20
NOISE_FLOOR = 0.2  # fraction of the ink's contrast below which a pixel is paper, not ink
MIN_CONTRAST = 24.0  # grey levels between paper and ink; below it the image is blank
MIN_INK_FRACTION = 0.15  # MNIST strokes cover about a third of their box; thicken thinner pen lines
BOX_THRESHOLD = 0.3  # ink level that defines the digit's bounding box


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Grey levels → ink in [0, 1] on 0, inverting when the background (the border) is light."""
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    middle = len(border) // 2
    background = float(np.partition(border, middle)[middle])
    if background > 127:
        gray, background = 255.0 - gray, 255.0 - background
    peak = float(gray.max())
    if peak - background < MIN_CONTRAST:
        raise BadInput("no digit found: the image has no contrast between ink and background")
    floor = background + NOISE_FLOOR * (peak - background)
    return np.clip((gray - floor) * (1.0 / (peak - floor)), 0.0, 1.0)


def ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    """The digit's bounding box, ignoring isolated specks of paper texture (a 2x2 erosion)."""
    mask = ink > BOX_THRESHOLD
    solid = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    if not solid.any():  # strokes one pixel thin: keep every ink pixel
        solid = ink > 0
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    extra = ink.shape[0] - solid.shape[0]  # an eroded mask is one pixel smaller
    return slice(rows[0], rows[-1] + 1 + extra), slice(cols[0], cols[-1] + 1 + extra)


def thicken(ink: np.ndarray) -> np.ndarray:
    """Dilate thin strokes of a large image so they survive shrinking to 20 pixels."""
    size = max(3, int(round(max(ink.shape) / BOX)) | 1)
    image = Image.fromarray((ink * 255).astype(np.uint8))
    for _ in range(4):
        if np.count_nonzero(np.asarray(image)) >= MIN_INK_FRACTION * ink.size:
            break
        image = image.filter(ImageFilter.MaxFilter(size))
    return np.asarray(image, dtype=np.float32) / 255.0


def fit_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Resize (anti-aliased) so the longer side is `box` pixels; peak ink back to 1."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(ink).resize(size, Image.LANCZOS)).clip(0.0, None)  # float32 → mode F
    peak = resized.max()
    return resized * (1.0 / peak) if peak > 0 else resized


def centre_by_mass(digit: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Place `digit` in a side x side canvas with its centre of mass at the centre."""
    height, width = digit.shape
    mass = digit.sum()
    centre_row = digit.sum(axis=1) @ np.arange(height) / mass
    centre_col = digit.sum(axis=0) @ np.arange(width) / mass
    top = min(max(round((side - 1) / 2 - centre_row), 0), side - height)
    left = min(max(round((side - 1) / 2 - centre_col), 0), side - width)
    canvas = np.zeros((side, side), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def prepare_digit(image: Image.Image) -> np.ndarray:
    """Any image of one digit → a 28x28 float32 array in [0, 1], MNIST-style."""
    ink = ink_on_black(to_gray(image))
    rows, cols = ink_box(ink)
    ink = np.ascontiguousarray(ink[rows, cols], dtype=np.float32)
    if max(ink.shape) > 2 * BOX:
        ink = thicken(ink)
    return centre_by_mass(fit_box(ink))
