"""Prepare a photo or scan of one handwritten digit the way MNIST's digits were made.

MNIST: light ink on black, the digit fitted into a 20x20 box keeping its aspect ratio,
anti-aliased, then placed in 28x28 so that its centre of mass is at the centre.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from app.errors import BadInput
from app.preprocessing.images import to_gray

SIDE, BOX = 28, 20
NOISE_FLOOR = 0.2  # fraction of the ink's contrast below which a pixel is paper, not ink
MIN_CONTRAST = 24.0  # grey levels between paper and ink; below it the image is blank
MIN_INK_FRACTION = 0.15
BOX_THRESHOLD = 0.3  # ink level that defines the digit's bounding box  # MNIST strokes cover about a third of their box; thicken thinner pen lines


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Grey levels → ink in [0, 1] on 0, inverting when the background (the border) is light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray, border = 255.0 - gray, 255.0 - border
    background, peak = float(np.median(border)), float(gray.max())
    if peak - background < MIN_CONTRAST:
        raise BadInput("no digit found: the image has no contrast between ink and background")
    ink = np.clip((gray - background) / (peak - background), 0.0, 1.0)
    return np.clip((ink - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box, found on a median-filtered copy so paper specks don't widen it."""
    size = 3 if max(ink.shape) < 200 else 5
    smooth = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").filter(ImageFilter.MedianFilter(size)))
    rows, cols = np.nonzero(smooth > BOX_THRESHOLD)
    if len(rows) == 0:  # thin strokes vanish under the filter: fall back to the raw ink
        rows, cols = np.nonzero(ink)
    cropped = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return cropped if cropped.any() else ink


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
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS))
    resized = np.clip(resized, 0.0, None)
    return resized / resized.max() if resized.max() > 0 else resized


def centre_by_mass(digit: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Place `digit` in a side x side canvas with its centre of mass at the centre."""
    height, width = digit.shape
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    centre_row, centre_col = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    top = int(np.clip(round((side - 1) / 2 - centre_row), 0, side - height))
    left = int(np.clip(round((side - 1) / 2 - centre_col), 0, side - width))
    canvas = np.zeros((side, side), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def prepare_digit(image: Image.Image) -> np.ndarray:
    """Any image of one digit → a 28x28 float32 array in [0, 1], MNIST-style."""
    ink = crop_to_ink(ink_on_black(to_gray(image)))
    if max(ink.shape) > 2 * BOX:
        ink = thicken(ink)
    return centre_by_mass(fit_box(ink))
