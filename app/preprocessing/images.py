"""Decode untrusted image bytes safely, and turn any mode into plain arrays."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import BadInput, TooLarge, Unsupported

# MPO: a JPEG carrying more pictures after the first (phone photos with a depth map or an HDR gain
# map); its first picture is the photo.
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP")
JPEG_FORMATS = ("JPEG", "MPO")
JPEG_SOI = b"\xff\xd8"
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # stretched to 0-255, not clipped
# Modes whose transparency, if any, is one value a PNG's tRNS chunk (a GIF's index) names transparent.
KEYED_MODES = ("1", "L", "P", "RGB")
# Our own pixel limit (a setting) is checked before decoding; PIL's is switched off so it
# never turns a large-but-allowed image into a warning or its own error type.
Image.MAX_IMAGE_PIXELS = None
# As Pillow's `thumbnail`: a JPEG decoded smaller still has at least twice the pixels (each way) the
# preparation keeps, so its own resampling does the last reduction and the result hardly changes.
REDUCING_GAP = 2

# libjpeg passes over every block of the picture once per scan, and a scan can be a few bytes: a
# 400 KB progressive JPEG with its scan repeated 5,000 times took 24 s of CPU. Photos have about 10
# scans (libjpeg's progressive script), 1 when baseline; an MPO's other pictures and an EXIF
# thumbnail are never decoded. Empty marker segments cost Pillow's header reader about 2 µs each.
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1_000
# A marker as libjpeg finds one, between segments or at the end of a scan's entropy-coded data:
# 0xFF then a code that is not a stuffed zero (0x00), a restart marker (0xD0-0xD7, inside a scan)
# or fill (0xFF). Only markers cost a Python step, so a photo's megabytes are scanned in C.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
JPEG_NO_LENGTH = (0x01, 0xD8)  # TEM and SOI stand alone
JPEG_EOI, JPEG_SOS = 0xD9, 0xDA


def jpeg_segments(data: bytes, scan_limit: int, segment_limit: int) -> tuple[int, int]:
    """(scans, marker segments) in a JPEG's first picture, up to its EOI: the part libjpeg decodes.

    Segments are walked by their lengths, so bytes inside metadata (EXIF and its thumbnail, ICC,
    XMP) are never taken for markers. Counting stops once either is over its limit, so a file of
    a million tiny segments costs no more than a normal one."""
    scans = segments = 0
    position = 2  # after SOI
    while scans <= scan_limit and segments <= segment_limit:
        marker = JPEG_MARKER.search(data, position)
        if marker is None:
            break
        code, position = data[marker.start() + 1], marker.end()
        if code == JPEG_EOI:
            break
        segments += 1
        scans += code == JPEG_SOS
        if code not in JPEG_NO_LENGTH:
            position += int.from_bytes(data[position:position + 2], "big")  # the length counts its own 2 bytes
    return scans, segments


def check_jpeg_cost(data: bytes, name: str) -> None:
    """Refuse a JPEG whose scans or marker segments would cost far more to decode than its size says."""
    scans, segments = jpeg_segments(data, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)
    if scans > MAX_JPEG_SCANS:
        raise BadInput(f"{name}: a JPEG with over {MAX_JPEG_SCANS} scans (photos have about 10); each scan "
                       "is a pass over the whole picture, so it is not decoded")
    if segments > MAX_JPEG_SEGMENTS:
        raise BadInput(f"{name}: a JPEG with over {MAX_JPEG_SEGMENTS:,} marker segments; it is not decoded")


def decode_image(data: bytes, max_pixels: int, name: str = "upload",
                 shrinks_to: Callable[[tuple[int, int]], tuple[int, int]] | None = None) -> Image.Image:
    """Bytes → a fully decoded PIL image, or a 4xx naming what is wrong with them (`open_image`,
    then `load_image`)."""
    return load_image(open_image(data, max_pixels, name), name, shrinks_to)


def open_image(data: bytes, max_pixels: int, name: str = "upload") -> Image.Image:
    """Bytes → a PIL image whose header is read and checked (an accepted format, within the pixel
    limit, a JPEG's scans and segments), no pixel decoded yet: a caller can weigh its size first."""
    if not data:
        raise BadInput(f"{name}: the upload is empty")
    if data.startswith(JPEG_SOI):  # before Pillow reads its header segments
        check_jpeg_cost(data, name)
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
    return image


def load_image(image: Image.Image, name: str = "upload",
               shrinks_to: Callable[[tuple[int, int]], tuple[int, int]] | None = None) -> Image.Image:
    """An `open_image` result → its first frame decoded and turned by its EXIF orientation
    (with `shrinks_to`, decoded smaller first: `shrink_on_decoding`)."""
    shrink_on_decoding(image, shrinks_to)  # outside the try: a bug here is ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)  # first frame of an animation
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # phone photos carry their rotation in EXIF; no copy
    except Exception as error:
        raise BadInput(f"{name}: truncated or corrupt image ({error})") from None
    return image


def shrink_on_decoding(image: Image.Image,
                       shrinks_to: Callable[[tuple[int, int]], tuple[int, int]] | None) -> Image.Image:
    """With `shrinks_to` (for an image of a given size, the size its preparation shrinks it to), a JPEG
    much larger than that is set to decode at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling:
    a 12-megapixel phone photo for an ImageNet classifier decodes about six times faster. No pixel
    is read; `image.size` is then the size it decodes to."""
    if shrinks_to is not None and image.format in JPEG_FORMATS:
        kept_width, kept_height = shrinks_to(image.size)
        image.draft(None, (kept_width * REDUCING_GAP, kept_height * REDUCING_GAP))
    return image


def flatten_alpha(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite transparent pixels onto a background (white: like paper): an alpha channel's, or
    those of the one value a PNG's tRNS chunk (a GIF's transparent index) names transparent, so
    the same picture gives the same input with either kind of transparency."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in KEYED_MODES and "transparency" in image.info):
        rgba = image.convert("RGBA")  # a tRNS value becomes alpha 0 (Pillow's transparent conversion)
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """Any mode → float32 luminance in [0, 255]; high-bit-depth images are stretched to fit."""
    if image.mode == "L" and "transparency" not in image.info:  # the common case, and the cheapest
        return np.asarray(image, dtype=np.float32)
    if image.mode in HIGH_BIT_MODES:
        return stretched_gray(image)
    return np.asarray(flatten_alpha(image).convert("L"), dtype=np.float32)


def stretched_gray(image: Image.Image, background: float = 255.0) -> np.ndarray:
    """A 16-bit, 32-bit or float image → float32 in [0, 255], its range stretched to fit rather than
    clipped (Pillow's conversion clips 16-bit values to 255). With a tRNS value, only the opaque
    pixels' range is stretched and the transparent ones are the background: the key value is no
    part of the picture. Stretched in place: a 40-megapixel image holds one float64 copy, not three
    (two while its range is read when it has a tRNS value)."""
    values = np.array(image, dtype=np.float64)  # float64: a float image's range may overflow float32
    key = image.info.get("transparency")
    transparent = values == key if isinstance(key, (int, float)) else None
    seen = values if transparent is None else values[~transparent]
    low, high = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 0.0)
    del seen
    if not np.isfinite([low, high]).all():
        raise BadInput("the image has pixel values that are not finite numbers (NaN or infinity)")
    values -= low
    values *= 255.0 / (high - low) if high > low else 0.0
    if transparent is not None:
        values[transparent] = background
    return values.astype(np.float32)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_BIT_MODES:
        return Image.fromarray(to_gray(image).astype(np.uint8)).convert("RGB")
    return flatten_alpha(image).convert("RGB")
