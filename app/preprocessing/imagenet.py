"""Prepare any photo for an ImageNet classifier: keep the aspect ratio, resize, centre-crop, scale.

As EfficientNet-Lite was evaluated: the shorter side resized to `resize` (bicubic), the central
`crop` x `crop` square kept (crop / resize = 0.875), RGB scaled to (x - mean) / scale.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from app.preprocessing.images import to_rgb


def resized_centre_crop(image: Image.Image, resize: int, crop: int) -> Image.Image:
    """The central `crop` x `crop` square of `image` with its shorter side resized to `resize`.

    Only the source region under that square is resampled (PIL's `box`), with the same pixel grid
    as resizing the whole image and cropping. Resizing the whole would scale a 1 x 100,000 image to
    256 x 25,600,000 pixels (about 20 GB) before cropping it."""
    if crop > resize:
        raise ValueError(f"the crop ({crop}) must not be larger than the resized shorter side ({resize})")
    width, height = image.size
    scale = resize / min(width, height)
    new_width, new_height = max(resize, round(width * scale)), max(resize, round(height * scale))
    left, top = (new_width - crop) // 2, (new_height - crop) // 2
    x_step, y_step = width / new_width, height / new_height  # source pixels per resized pixel
    box = (left * x_step, top * y_step, (left + crop) * x_step, (top + crop) * y_step)
    return image.resize((crop, crop), Image.BICUBIC, box=box)


def imagenet_shrunk_size(source: tuple[int, int], resize: int = 256, **_: object) -> tuple[int, int]:
    """The size `resized_centre_crop` resizes a `source`-sized image to (at most the source's)."""
    width, height = source
    scale = min(1.0, resize / min(width, height))
    return math.ceil(width * scale), math.ceil(height * scale)


def prepare_imagenet(image: Image.Image, resize: int = 256, crop: int = 224,
                     mean: float = 127.0, scale: float = 128.0) -> np.ndarray:
    """Any image → a crop x crop x 3 float32 array, (RGB - mean) / scale."""
    rgb = resized_centre_crop(to_rgb(image), resize, crop)
    return (np.asarray(rgb, dtype=np.float32) - mean) / scale
