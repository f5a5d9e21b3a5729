"""Decode untrusted image bytes safely, and turn any mode into plain arrays."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import BadInput, TooLarge, Unsupported

# MPO: a JPEG carrying more pictures after the first (phone photos with a depth map or an HDR gain
# map); its first picture is the photo.
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP")
JPEG_FORMATS = ("JPEG", "MPO")
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # stretched to 0-255, not clipped
# Our own pixel limit (a setting) is checked before decoding; PIL's is switched off so it
# never turns a large-but-allowed image into a warning or its own error type.
Image.MAX_IMAGE_PIXELS = None
# As Pillow's `thumbnail`: a JPEG decoded smaller still has at least twice the pixels (each way) the
# preparation keeps, so its own resampling does the last reduction and the result hardly changes.
REDUCING_GAP = 2


def decode_image(data: bytes, max_pixels: int, name: str = "upload",
                 shrinks_to: Callable[[tuple[int, int]], tuple[int, int]] | None = None) -> Image.Image:
    """Bytes → a fully decoded PIL image, or a 4xx naming what is wrong with them.

    With `shrinks_to` (for an image of a given size, the size its preparation shrinks it to), a JPEG
    much larger than that is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling:
    a 12-megapixel phone photo for an ImageNet classifier decodes about six times faster."""
    if not data:
        raise BadInput(f"{name}: the upload is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadInput(f"{name}: not an image (accepted: {', '.join(ALLOWED_FORMATS)})") from None
    except Exception as error:
        raise BadInput(f"{name}: unreadable image ({error})") from None
    if image.format not in ALLOWED_FORMATS:
        raise Unsupported(f"{name}: {image.format} images are not accepted ({', '.join(ALLOWED_FORMATS)})")
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}"
        )
    if width == 0 or height == 0:
        raise BadInput(f"{name}: the image has no pixels")
    if shrinks_to is not None and image.format in JPEG_FORMATS:  # outside the try: a bug here is ours
        kept_width, kept_height = shrinks_to(image.size)
        image.draft(None, (kept_width * REDUCING_GAP, kept_height * REDUCING_GAP))  # reads no pixels yet
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)  # first frame of an animation
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # phone photos carry their rotation in EXIF; no copy
    except Exception as error:
        raise BadInput(f"{name}: truncated or corrupt image ({error})") from None
    return image


def flatten_alpha(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite transparent pixels onto a background (white: like paper)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """Any mode → float32 luminance in [0, 255]; high-bit-depth images are stretched to fit."""
    if image.mode == "L":  # the common case, and the cheapest
        return np.asarray(image, dtype=np.float32)
    if image.mode in HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)  # float64: a float image's range may overflow float32
        low, high = float(values.min()), float(values.max())
        if not np.isfinite([low, high]).all():
            raise BadInput("the image has pixel values that are not finite numbers (NaN or infinity)")
        stretched = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return stretched.astype(np.float32)
    return np.asarray(flatten_alpha(image).convert("L"), dtype=np.float32)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_BIT_MODES:
        return Image.fromarray(to_gray(image).astype(np.uint8)).convert("RGB")
    return flatten_alpha(image).convert("RGB")
