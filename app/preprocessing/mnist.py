"""Prepare a photo or scan of one handwritten digit the way MNIST's digits were made.

MNIST: light ink on black, the digit fitted into a 20x20 box keeping its aspect ratio,
anti-aliased, then placed in 28x28 so that its centre of mass is at the centre.

It runs on the serving path for every upload, so it works on a stack of same-sized images at
once (`prepare_digits`): the uploads of one batch share a few whole-array operations instead of
a few dozen each. The anti-aliased resize is PIL's Lanczos filter written as two small matrices per
digit (`lanczos_weights`), equal to PIL's own resize to float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageFilter

from app.errors import BadInput
from app.preprocessing.images import to_gray

SIDE, BOX = 28, 20
NOISE_FLOOR = 0.2  # fraction of the ink's contrast below which a pixel is paper, not ink
MIN_CONTRAST = 24.0  # grey levels between paper and ink; below it the image is blank
MIN_INK_FRACTION = 0.15  # MNIST strokes cover about a third of their box; thicken thinner pen lines
BOX_THRESHOLD = 0.3  # ink level that defines the digit's bounding box
THICKEN_SIDE = 8 * BOX  # a larger crop is max-pooled to this size before its strokes are thickened
NO_CONTRAST = "no digit found: the image has no contrast between ink and background"


def lanczos(x: np.ndarray) -> np.ndarray:
    """PIL's Lanczos kernel (a = 3)."""
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


@functools.lru_cache(maxsize=1024)  # crops of at most 2 x BOX pixels: at most 40 x 20 sizes
def lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) matrix of PIL's Lanczos resampling along one axis (its
    `precompute_coeffs`: the kernel widened by the shrink factor, each row normalised to 1).
    Only for small crops: a large one is resized by PIL itself (`fit_large`)."""
    scale = in_size / out_size
    widen = max(scale, 1.0)
    support = 3.0 * widen
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        low, high = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        kernel = lanczos((np.arange(low, high) - centre + 0.5) / widen)
        total = kernel.sum()
        weights[out, low:high] = kernel / total if total != 0 else kernel
    weights.setflags(write=False)
    return weights


def ink_on_black(grays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels (N, H, W) → ink in [0, 1] on 0, inverting each image whose background (the
    border's median) is light; and which images have no contrast between ink and paper."""
    border = np.concatenate([grays[:, 0], grays[:, -1], grays[:, 1:-1, 0], grays[:, 1:-1, -1]], axis=1)
    middle = border.shape[1] // 2
    background = np.partition(border, middle, axis=1)[:, middle].astype(np.float64)
    light = background > 127
    if light.any() and not grays.flags.writeable:
        grays = grays.copy()
    for i in np.flatnonzero(light):  # in place: a large photo is not copied again
        np.subtract(np.float32(255.0), grays[i], out=grays[i])
    background = np.where(light, 255.0 - background, background)
    peak = grays.max(axis=(1, 2)).astype(np.float64)
    blank = peak - background < MIN_CONTRAST
    floor = background + NOISE_FLOOR * (peak - background)
    scale = np.where(blank, 0.0, 1.0 / np.where(blank, 1.0, peak - floor))
    ink = np.clip((grays - floor[:, None, None].astype(np.float32)) * scale[:, None, None].astype(np.float32), 0.0, 1.0)
    return ink, blank


def ink_boxes(ink: np.ndarray) -> np.ndarray:
    """Each digit's bounding box (N, 4: top, bottom, left, right; end-exclusive), ignoring isolated
    specks of paper texture (a 2x2 erosion); a digit whose strokes are one pixel thin keeps every ink pixel."""
    mask = ink > BOX_THRESHOLD
    solid = mask[:, :-1, :-1] & mask[:, 1:, :-1] & mask[:, :-1, 1:] & mask[:, 1:, 1:]
    rows, cols = solid.any(axis=2), solid.any(axis=1)
    boxes = np.stack([*span(rows, 1), *span(cols, 1)], axis=1)  # an eroded mask is one pixel smaller
    for i in np.flatnonzero(~rows.any(axis=1)):  # no 2x2 block of ink: thin strokes
        thin = ink[i] > 0
        (top, bottom), (left, right) = span(thin.any(axis=1)[None], 0), span(thin.any(axis=0)[None], 0)
        boxes[i] = (top[0], bottom[0], left[0], right[0])
    return boxes


def span(present: np.ndarray, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """First and end-exclusive last index of each row's True values (`extra` added to the end)."""
    if present.shape[1] == 0:  # an image one pixel high or wide has no 2x2 blocks
        return np.zeros(len(present), np.int64), np.zeros(len(present), np.int64)
    first = present.argmax(axis=1)
    last = present.shape[1] - 1 - present[:, ::-1].argmax(axis=1)
    return first, last + 1 + extra


def max_pool(ink: np.ndarray, side: int) -> np.ndarray:
    """`ink` shrunk to at most `side` pixels along each axis, each block keeping its brightest pixel:
    no stroke is lost, however thin."""
    fh, fw = -(-ink.shape[0] // side), -(-ink.shape[1] // side)  # ceiling: integer block sizes
    if fh == fw == 1:
        return ink
    padded = np.pad(ink, ((0, -ink.shape[0] % fh), (0, -ink.shape[1] % fw)))
    return padded.reshape(padded.shape[0] // fh, fh, padded.shape[1] // fw, fw).max(axis=(1, 3))


def thicken(ink: np.ndarray) -> np.ndarray:
    """Dilate thin strokes of a large image so they survive shrinking to 20 pixels.

    A crop over THICKEN_SIDE pixels is max-pooled to that size first. The dilation's cost grows
    with the crop's area times the square of its filter size (about a twentieth of the crop), and
    PIL's filter holds the interpreter lock: a pen-drawn 3000x3000 photo took 96 s and stalled
    every other request, and a long enough crop made PIL refuse the filter size."""
    ink = max_pool(ink, THICKEN_SIDE)
    size = max(3, int(round(max(ink.shape) / BOX)) | 1)
    image = Image.fromarray((ink * 255).astype(np.uint8))
    for _ in range(4):
        if np.count_nonzero(np.asarray(image)) >= MIN_INK_FRACTION * ink.size:
            break
        image = image.filter(ImageFilter.MaxFilter(size))
    return np.asarray(image, dtype=np.float32) / 255.0


def fit_large(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """A large crop (a photo's digit), its thin strokes thickened, resized by PIL's Lanczos filter."""
    return np.asarray(Image.fromarray(thicken(crop)).resize((width, height), Image.LANCZOS))


def fitted_size(height: int, width: int) -> tuple[int, int]:
    """The digit's size once its longer side is BOX pixels."""
    scale = BOX / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def prepare_digits(grays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey images of one size (N, H, W, float32 in [0, 255]) → (N, 28, 28) float32 MNIST-style
    inputs, and a boolean per image: True where no digit was found (its row is left blank).

    Finding the ink and its box, scaling the peak and centring run on the whole stack; only the
    resize of each digit's crop is its own: two small matrix products, the horizontal pass first,
    each rounded to float32 as PIL does. A crop over 2 x BOX pixels (a large photo) is thickened
    and resized by PIL itself."""
    ink, blank = ink_on_black(grays.astype(np.float32, copy=False))
    boxes = ink_boxes(ink)
    fitted = np.zeros((len(ink), BOX, BOX), np.float32)
    sizes = np.zeros((len(ink), 2), np.int64)
    for i in np.flatnonzero(~blank):
        top, bottom, left, right = boxes[i]
        crop = ink[i, top:bottom, left:right]
        height, width = sizes[i] = fitted_size(*crop.shape)
        if max(crop.shape) > 2 * BOX:
            fitted[i, :height, :width] = fit_large(crop, height, width)
            continue
        across = (crop @ lanczos_weights(crop.shape[1], width).T).astype(np.float32)
        fitted[i, :height, :width] = lanczos_weights(crop.shape[0], height) @ across
    fitted = fitted.clip(0.0, None)
    peak = fitted.max(axis=(1, 2))
    fitted *= np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)[:, None, None]
    return centre_by_mass(fitted, sizes, blank), blank


def centre_by_mass(fitted: np.ndarray, sizes: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Place each fitted digit (top-left of its BOX x BOX frame) in a 28x28 canvas with its centre
    of mass at the centre."""
    mass = fitted.sum(axis=(1, 2))
    mass = np.where(mass > 0, mass, 1.0)
    centre_row = fitted.sum(axis=2) @ np.arange(BOX) / mass
    centre_col = fitted.sum(axis=1) @ np.arange(BOX) / mass
    canvas = np.zeros((len(fitted), SIDE, SIDE), np.float32)
    for i in np.flatnonzero(~blank):
        height, width = sizes[i]
        top = min(max(round((SIDE - 1) / 2 - centre_row[i]), 0), SIDE - height)
        left = min(max(round((SIDE - 1) / 2 - centre_col[i]), 0), SIDE - width)
        canvas[i, top : top + height, left : left + width] = fitted[i, :height, :width]
    return canvas


def prepare_digit_images(images: list[Image.Image]) -> list[np.ndarray | BadInput]:
    """Several images of one digit each → each one's 28x28 input, or the BadInput that is its alone;
    images of the same size are prepared as one stack."""
    results: list[np.ndarray | BadInput | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for index, image in enumerate(images):
        try:
            gray = to_gray(image)
        except BadInput as error:
            results[index] = error
            continue
        by_shape.setdefault(gray.shape, []).append((index, gray))
    for members in by_shape.values():
        digits, blank = prepare_digits(np.stack([gray for _, gray in members]))
        for (index, _), digit, empty in zip(members, digits, blank, strict=True):
            results[index] = BadInput(NO_CONTRAST) if empty else digit
    return results  # type: ignore[return-value]  # every index was set


def prepare_digit(image: Image.Image) -> np.ndarray:
    """Any image of one digit → a 28x28 float32 array in [0, 1], MNIST-style."""
    (result,) = prepare_digit_images([image])
    if isinstance(result, BadInput):
        raise result
    return result
