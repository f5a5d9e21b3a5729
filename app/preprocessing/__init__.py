"""Input preparation shared by training and serving, chosen by a model's manifest.

`PREPARERS` is the one list of image preparations: a manifest's `preprocessing.kind` names one,
and its other keys are passed as keyword arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from app.errors import BadInput
from app.preprocessing.fashion import prepare_fashion_item
from app.preprocessing.imagenet import imagenet_shrunk_size, prepare_imagenet
from app.preprocessing.mnist import prepare_digit, prepare_digit_images
from app.preprocessing.resized import prepare_resized, resized_shrunk_size

ImagePreparer = Callable[..., np.ndarray]

PREPARERS: dict[str, ImagePreparer] = {
    "mnist_digit": prepare_digit,
    "fashion_item": prepare_fashion_item,
    "resized": prepare_resized,
    "imagenet": prepare_imagenet,
}


# Preparations that also take a list of images at once (several uploads of one batch), answering
# each image's input or the BadInput that is its alone.
MANY_PREPARERS: dict[str, Callable[..., list[np.ndarray | BadInput]]] = {
    "mnist_digit": prepare_digit_images,
}


ShrunkSize = Callable[[tuple[int, int]], tuple[int, int]]

# Preparations that only ever shrink the image, with the size they shrink an image of a given size
# to: a large JPEG for them is decoded at 1/2, 1/4 or 1/8 scale (`decode_image`'s `shrinks_to`).
SHRUNK_SIZES: dict[str, Callable[..., tuple[int, int]]] = {
    "imagenet": imagenet_shrunk_size,
    "resized": resized_shrunk_size,
}


def shrunk_size(preprocessing: dict[str, Any]) -> ShrunkSize | None:
    """For an image of a given size, the size this preparation shrinks it to; None if it needs
    every pixel, as the digit and item preparations do to find the strokes or the item."""
    params = dict(preprocessing)
    sizes = SHRUNK_SIZES.get(params.pop("kind", None))
    return None if sizes is None else functools.partial(sizes, **params)


def prepare_images(images: list[Image.Image], preprocessing: dict[str, Any]) -> list[np.ndarray | BadInput]:
    """Several decoded images → each one's model input (or its BadInput), as the manifest prescribes:
    together where the preparation can, else one by one."""
    params = dict(preprocessing)
    kind = params.pop("kind")
    if kind in MANY_PREPARERS:
        return MANY_PREPARERS[kind](images, **params)
    results: list[np.ndarray | BadInput] = []
    for image in images:
        try:
            results.append(PREPARERS[kind](image, **params))
        except BadInput as error:
            results.append(error)
    return results


def prepare_image(image: Image.Image, preprocessing: dict[str, Any]) -> np.ndarray:
    """One decoded image → one model input, as the model's manifest prescribes."""
    (result,) = prepare_images([image], preprocessing)
    if isinstance(result, BadInput):
        raise result
    return result


def check_preparation(preprocessing: dict[str, Any], input_shape: list[int]) -> None:
    """Refuse, when a version loads, an image preparation that could not prepare any upload: an
    unknown kind, parameters it rejects, or rows of another shape than the model's input. Otherwise
    every request to that version would fail."""
    kind = preprocessing.get("kind")
    if kind not in PREPARERS:
        raise ValueError(f"unknown image preprocessing kind {kind!r} (known: {', '.join(PREPARERS)})")
    sample = Image.new("L", (64, 64), 255)
    sample.paste(0, (24, 16, 40, 48))  # something on a plain background, as a photo of one item
    try:
        (rows,) = prepare_images([sample], preprocessing)
    except Exception as error:
        raise ValueError(f"the image preprocessing {preprocessing} fails: {error}") from None
    if isinstance(rows, BadInput):
        raise ValueError(f"the image preprocessing {preprocessing} refuses a plain test image: {rows.detail}")
    if tuple(rows.shape) != tuple(input_shape):
        raise ValueError(f"the image preprocessing {preprocessing} makes inputs of shape {tuple(rows.shape)}, "
                         f"the model takes {tuple(input_shape)}")
