"""Input preparation shared by training and serving, chosen by a model's manifest.

`PREPARERS` is the one list of image preparations: a manifest's `preprocessing.kind` names one,
and its other keys are passed as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from app.preprocessing.fashion import prepare_fashion_item
from app.preprocessing.imagenet import prepare_imagenet
from app.preprocessing.mnist import prepare_digit
from app.preprocessing.resized import prepare_resized

ImagePreparer = Callable[..., np.ndarray]

PREPARERS: dict[str, ImagePreparer] = {
    "mnist_digit": prepare_digit,
    "fashion_item": prepare_fashion_item,
    "resized": prepare_resized,
    "imagenet": prepare_imagenet,
}


def prepare_image(image: Image.Image, preprocessing: dict[str, Any]) -> np.ndarray:
    """One decoded image → one model input, as the model's manifest prescribes."""
    params = dict(preprocessing)
    kind = params.pop("kind")
    return PREPARERS[kind](image, **params)
