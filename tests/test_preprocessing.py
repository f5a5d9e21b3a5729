"""Digit preparation: any photo of one digit becomes an MNIST-style 28x28 input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.errors import BadInput
from app.preprocessing.colours import colour_reference, match_colours
from app.preprocessing.mnist import prepare_digit


def drawn_seven(size=(120, 160), offset=(0, 0), ink=255, paper=0) -> Image.Image:
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    x, y = 30 + offset[0], 30 + offset[1]
    draw.line([(x, y), (x + 55, y), (x + 20, y + 90)], fill=ink, width=9)
    return image


def centre_of_mass(array: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(array.shape)
    return float((rows * array).sum() / array.sum()), float((cols * array).sum() / array.sum())


def test_dark_on_white_equals_light_on_black():
    light_on_black = prepare_digit(drawn_seven(ink=255, paper=0))
    dark_on_white = prepare_digit(drawn_seven(ink=0, paper=255))
    assert np.allclose(light_on_black, dark_on_white, atol=1e-6)


def test_output_is_mnist_shaped_and_scaled():
    digit = prepare_digit(drawn_seven())
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() == 0.0 and digit.max() == pytest.approx(1.0)
    rows, cols = np.nonzero(digit)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20  # fitted into 20x20


def test_an_off_centre_digit_is_centred_by_mass():
    centred = prepare_digit(drawn_seven(size=(400, 400), offset=(0, 0)))
    corner = prepare_digit(drawn_seven(size=(400, 400), offset=(280, 250)))
    assert np.allclose(centred, corner, atol=1e-6)
    row, col = centre_of_mass(corner)
    assert abs(row - 13.5) <= 0.5 and abs(col - 13.5) <= 0.5


def test_grey_paper_with_noise_is_cleaned():
    rng = np.random.default_rng(0)
    paper = np.clip(rng.normal(200, 8, (160, 120)), 0, 255)
    ink = np.asarray(drawn_seven(ink=255, paper=0), dtype=np.float64) > 0
    photo = Image.fromarray(np.where(ink, 40, paper).astype(np.uint8))
    digit = prepare_digit(photo)
    reference = prepare_digit(drawn_seven(ink=0, paper=255))
    assert np.abs(digit - reference).mean() < 0.05


def test_blank_image_is_refused():
    with pytest.raises(BadInput, match="no digit found"):
        prepare_digit(Image.new("L", (50, 50), 128))


# --- colour matching (the tree detector's) ----------------------------------------------------------

def test_colour_matching_gives_an_image_the_reference_distribution_and_keeps_its_order():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 100, (60, 80, 3)).astype(np.uint8)
    bright = rng.integers(120, 250, (50, 50, 3)).astype(np.uint8)
    bright[..., 2] //= 2  # each channel has its own reference
    reference = colour_reference([bright])
    assert reference.shape == (3, 65)
    np.testing.assert_allclose(reference[:, 32], np.median(bright.reshape(-1, 3), axis=0), atol=1.0)
    matched = match_colours(dark, reference)
    assert matched.shape == dark.shape and matched.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_allclose(np.quantile(matched[..., channel], [0.1, 0.5, 0.9]),
                                   np.quantile(bright[..., channel], [0.1, 0.5, 0.9]), atol=3.0)
        order = np.argsort(dark[..., channel].ravel(), kind="stable")
        assert (np.diff(matched[..., channel].ravel()[order].astype(int)) >= 0).all()  # darker stays darker


def test_an_image_matched_to_its_own_colours_barely_changes():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    difference = match_colours(image, colour_reference([image])).astype(int) - image
    assert np.abs(difference).max() <= 2


@pytest.mark.parametrize(("in_size", "out_size"), [(28, 20), (20, 20), (7, 20), (13, 9), (300, 20), (41, 17)])
def test_lanczos_weights_resize_like_pil(in_size, out_size):
    from app.preprocessing.mnist import lanczos_weights

    values = np.random.default_rng(in_size).random((in_size, 11)).astype(np.float32)
    pil = np.asarray(Image.fromarray(values).resize((11, out_size), Image.LANCZOS))
    assert np.allclose(lanczos_weights(in_size, out_size) @ values, pil, atol=2e-6)


def test_digits_prepared_together_equal_each_alone():
    from app.preprocessing.mnist import prepare_digits

    images = [drawn_seven(size=(60, 60), offset=(x, y)) for x, y in ((0, 0), (15, 5), (5, 20))]
    images.append(Image.new("L", (60, 60), 128))  # blank: no digit
    grays = np.stack([np.asarray(im, np.float32) for im in images])
    together, blank = prepare_digits(grays)
    assert blank.tolist() == [False, False, False, True] and not together[3].any()
    for image, digit in zip(images[:3], together, strict=False):
        assert np.array_equal(digit, prepare_digit(image))


def test_a_large_pen_drawing_is_prepared_like_a_small_one():
    """Thin strokes of a large photo are thickened on a max-pooled copy: the same digit as drawn
    small, and no stroke lost however long or thin the image (PIL refused the filter size once a
    crop passed about 460,000 pixels, and a 3000x3000 drawing took 96 s under the interpreter lock)."""
    def seven(side: int, width: int) -> Image.Image:
        image = Image.new("L", (side, side), 255)
        draw = ImageDraw.Draw(image)
        draw.line([(side // 6, side // 6), (5 * side // 6, side // 6), (side // 4, 5 * side // 6)], fill=0, width=width)
        return image

    small, large = prepare_digit(seven(150, 2)), prepare_digit(seven(2400, 6))
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.95
    stripes = np.full((500_000, 4), 255, np.uint8)
    stripes[::1000] = 0  # one-pixel lines, 1,000 pixels apart
    prepared = prepare_digit(Image.fromarray(stripes))
    assert prepared.shape == (28, 28) and prepared.max() == 1.0


def test_max_pooling_keeps_a_one_pixel_stroke():
    from app.preprocessing.mnist import max_pool

    ink = np.zeros((1000, 333), np.float32)
    ink[:, 200] = 1.0  # a vertical line one pixel wide
    pooled = max_pool(ink, 160)
    assert pooled.shape == (143, 111)  # blocks of 7 x 3 (the last row of blocks padded)
    assert pooled.sum(axis=1).tolist() == [1.0] * 143 and np.flatnonzero(pooled.any(axis=0)).tolist() == [66]
    small = ink[:100, :100]
    assert max_pool(small, 160) is small  # within the size: untouched
