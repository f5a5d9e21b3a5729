"""Property tests for input preparation: any image of any size or mode yields a valid model input
(28x28 float32, finite, within [0, 1]) or a clean 4xx `ApiError`, and never another exception.

Two routes in: encoded images in every accepted format through the upload path the service uses,
and in-memory images of every mode (including ones no accepted format decodes to, such as F)
through `prepare_image`, as training calls it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.api.uploads import UploadPreparer
from app.errors import ApiError
from app.preprocessing import prepare_image
from app.preprocessing.images import decode_image
from tests.conftest import make_settings

DIGIT = {"kind": "mnist_digit"}
SETTINGS = make_settings(Path("unused"))
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]
# What Pillow can write in each accepted format (GIF quantizes anything to a palette).
WRITABLE = {
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"},
    "JPEG": {"1", "L", "RGB", "CMYK"},
    "BMP": {"1", "L", "P", "RGB", "RGBA"},
    "GIF": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F"},
    "WEBP": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"},
}
PATTERNS = ["constant", "noise", "stroke", "sparse", "gradient", "extremes"]
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("PROPERTY_MAX_EXAMPLES", 150)), deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def side() -> st.SearchStrategy[int]:
    """1 px up to a few hundred, with the edges (1, 2, 3) and long thin shapes drawn often."""
    return st.one_of(st.integers(1, 3), st.integers(1, 40), st.integers(1, 300))


def levels(pattern: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values in [0, 1] laid out as `pattern`: blank, noisy, a drawn stroke, specks, a ramp, 0/1 only."""
    height, width = shape[:2]
    if pattern == "constant":
        return np.full(shape, rng.random())
    if pattern == "noise":
        return rng.random(shape)
    if pattern == "stroke":
        canvas = np.full(shape, rng.random() * 0.3)
        rows = slice(*sorted(rng.integers(0, height + 1, 2)) + np.array([0, 1]))
        cols = slice(*sorted(rng.integers(0, width + 1, 2)) + np.array([0, 1]))
        canvas[rows, cols] = 0.7 + rng.random() * 0.3
        return canvas if rng.random() < 0.5 else 1.0 - canvas  # light ink on dark, or dark on light
    if pattern == "sparse":
        canvas = np.zeros(shape)
        canvas[rng.integers(0, height, 3), rng.integers(0, width, 3)] = 1.0
        return canvas
    if pattern == "gradient":
        ramp = np.linspace(0.0, 1.0, width)[None, :] * np.ones((height, 1))
        return ramp.reshape(height, width, *([1] * (len(shape) - 2))) * np.ones(shape)
    return rng.integers(0, 2, shape).astype(np.float64)


def make_image(mode: str, width: int, height: int, pattern: str, seed: int, transparent: bool) -> Image.Image:
    """An in-memory image of `mode`, filled with `pattern`; P images may carry a transparent index."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(levels(pattern, (height, width), rng) > 0.5)
    if mode in ("L", "P"):
        image = Image.fromarray((levels(pattern, (height, width), rng) * 255).astype(np.uint8))
        if mode == "P":
            image = image.convert("P")
            image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
            if transparent:
                image.info["transparency"] = int(rng.integers(0, 256))
        return image
    if mode in ("LA", "RGB", "RGBA", "CMYK"):
        channels = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
        values = (levels(pattern, (height, width, channels), rng) * 255).astype(np.uint8)
        return Image.frombytes(mode, (width, height), values.tobytes())
    if mode == "I;16":
        values = (levels(pattern, (height, width), rng) * 65535).astype("<u2")
        return Image.frombytes("I;16", (width, height), values.tobytes())
    if mode == "I":
        span = float(rng.choice([255, 65535, 2**31 - 1]))
        return Image.fromarray((levels(pattern, (height, width), rng) * 2 * span - span).astype(np.int32))
    values = (levels(pattern, (height, width), rng) * float(rng.choice([1.0, 255.0, 1e30]))).astype(np.float32)
    if transparent:  # an F image can hold values no integer image can
        values.flat[rng.integers(0, values.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return Image.fromarray(values)


@st.composite
def images(draw, modes=MODES) -> Image.Image:
    return make_image(
        draw(st.sampled_from(modes)), draw(side()), draw(side()), draw(st.sampled_from(PATTERNS)),
        draw(st.integers(0, 2**32 - 1)), draw(st.booleans()),
    )


@st.composite
def encoded_images(draw) -> bytes:
    """An image in an accepted format, with format options that change how it decodes."""
    fmt = draw(st.sampled_from(sorted(WRITABLE)))
    image = draw(images(sorted(WRITABLE[fmt])))
    options: dict = {}
    if fmt == "JPEG":
        options["quality"] = draw(st.integers(1, 95))
    if fmt == "WEBP":
        options["lossless"] = draw(st.booleans())
    if fmt in ("JPEG", "PNG", "WEBP") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8))  # orientation: phones store rotation here
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def assert_model_input(array: np.ndarray) -> None:
    assert array.shape == (28, 28) and array.dtype == np.float32
    assert np.isfinite(array).all()
    assert array.min() >= 0.0 and array.max() <= 1.0


def assert_clean_refusal(error: ApiError) -> None:
    assert 400 <= error.status_code < 500 and error.detail


@PROPERTY_SETTINGS
@given(data=encoded_images())
def test_any_upload_becomes_a_model_input_or_a_4xx(data):
    try:
        batch = UploadPreparer(DIGIT, SETTINGS.MAX_IMAGE_PIXELS)([("file 1", data)])
    except ApiError as error:
        event(f"refused with {error.status_code}")  # `--hypothesis-show-statistics` shows the mix
        assert_clean_refusal(error)
        return
    event("prepared")
    assert batch.shape == (1, 28, 28)
    assert_model_input(batch[0])


@PROPERTY_SETTINGS
@given(image=images())
def test_any_image_in_any_mode_becomes_a_model_input_or_a_4xx(image):
    try:
        prepared = prepare_image(image, DIGIT)
    except ApiError as error:
        event(f"refused with {error.status_code}")
        assert_clean_refusal(error)
        return
    event("prepared")
    assert_model_input(prepared)


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    """An L image re-expressed in `mode` (no dithering; 16-bit scaled to its full range)."""
    if mode == "I;16":
        values = np.asarray(image).astype("<u2") * 257
        return Image.frombytes("I;16", image.size, values.tobytes())
    return image.convert(mode, dither=Image.Dither.NONE)


@pytest.mark.parametrize("mode", MODES)
def test_a_digit_in_every_mode_is_prepared_alike(mode):
    """The same stroke in any mode gives the same input: preparation ignores how it was stored."""
    digit = make_image("L", 60, 80, "stroke", 3, False)
    reference = prepare_image(digit, DIGIT)
    prepared = prepare_image(in_mode(digit, mode), DIGIT)
    assert_model_input(prepared)
    assert np.abs(prepared - reference).max() < 0.05, mode


def test_a_decoded_upload_and_its_image_prepare_identically():
    image = make_image("RGB", 120, 90, "stroke", 5, False)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), SETTINGS.MAX_IMAGE_PIXELS)
    assert np.array_equal(prepare_image(decoded, DIGIT), prepare_image(image, DIGIT))
