"""Prepare any image for a model trained on a folder of images: resize, colour mode, scale to [0, 1].

Training reads the folder through this same function, so a served upload is prepared exactly the
way the training images were.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from app.preprocessing.images import to_gray, to_rgb

ColourMode = Literal["grayscale", "rgb"]


def resized_shrunk_size(_source: tuple[int, int], size: int | list[int], **_: object) -> tuple[int, int]:
    """What `prepare_resized` shrinks any source to: its output size, the longer side both ways
    (a photo's EXIF rotation may swap width and height after decoding)."""
    side = size if isinstance(size, int) else max(size)
    return side, side


def prepare_resized(image: Image.Image, size: int | list[int], colour_mode: ColourMode = "rgb") -> np.ndarray:
    """Any image → float32 (height, width, 1 or 3) in [0, 1], stretched to `size` (side or [h, w])."""
    height, width = (size, size) if isinstance(size, int) else size
    if colour_mode == "grayscale":
        gray = Image.fromarray(to_gray(image).astype(np.uint8))
        return np.asarray(gray.resize((width, height), Image.BILINEAR), dtype=np.float32)[..., None] / 255.0
    rgb = to_rgb(image).resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / 255.0
