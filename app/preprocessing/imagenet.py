"""Prepare any photo for an ImageNet classifier: keep the aspect ratio, resize, centre-crop, scale.

As EfficientNet-Lite was evaluated: the shorter side resized to `resize` (bicubic), the central
`crop` x `crop` square kept (crop / resize = 0.875), RGB scaled to (x - mean) / scale.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.preprocessing.images import to_rgb


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image.resize(new_size, Image.BICUBIC)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def prepare_imagenet(image: Image.Image, resize: int = 256, crop: int = 224,
                     mean: float = 127.0, scale: float = 128.0) -> np.ndarray:
    """Any image → a crop x crop x 3 float32 array, (RGB - mean) / scale."""
    rgb = centre_crop(resize_shorter_side(to_rgb(image), resize), crop)
    return (np.asarray(rgb, dtype=np.float32) - mean) / scale
