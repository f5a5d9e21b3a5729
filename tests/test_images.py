"""Image decoding (app/preprocessing/images.py): what it refuses before decoding, and transparency."""

from __future__ import annotations

import io
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app.api.uploads import upload_preparer
from app.errors import BadInput
from app.preprocessing import prepare_image
from app.preprocessing.images import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS, decode_image, jpeg_segments, load_image, to_gray
from app.serving.budget import PixelBudget
from tests.conftest import make_settings, png_bytes

MAX_PIXELS = 40_000_000


def segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def scan_bomb(side: int, scans: int) -> bytes:
    """A progressive greyscale JPEG whose AC scan (one EOB run over every block: a few bytes) is
    repeated `scans` times; libjpeg passes over every block once per scan."""
    blocks = (side // 8) ** 2

    def bits(codes: list[tuple[int, int]]) -> bytes:  # (value, bit count) → bytes padded with 1s, 0xFF stuffed
        text = "".join(format(value, f"0{count}b") for value, count in codes)
        text += "1" * (-len(text) % 8)
        return bytes(int(text[i:i + 8], 2) for i in range(0, len(text), 8)).replace(b"\xff", b"\xff\x00")

    head = (b"\xff\xd8" + segment(0xDB, b"\0" + b"\1" * 64)  # one table of ones
            + segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\1\x11\0")  # progressive, one component
            + segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: one code, for 0
            + segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0"))  # AC: one code, for an EOB run of 2^14+
    dc = segment(0xDA, b"\1\1\0\0\0\0") + bits([(0, 1)] * blocks)  # every DC difference 0
    ac = segment(0xDA, b"\1\1\0\1\x3f\0") + bits([(0, 1), (32767 - 16384, 14)] * (blocks // 32767 + 1))
    return head + dc + ac * scans + b"\xff\xd9"


def photo(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, fmt, **save)
    return buffer.getvalue()


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding():
    """The probe's bomb: 101 scans of a 2000 x 2000 picture. Decoded, each scan is a pass over
    every block (5,000 scans of 6320 x 6320 took 24 s); refused, it costs microseconds."""
    bomb = scan_bomb(2000, MAX_JPEG_SCANS + 1)
    started = time.perf_counter()
    with pytest.raises(BadInput, match=f"a JPEG with over {MAX_JPEG_SCANS} scans"):
        decode_image(bomb, MAX_PIXELS, "bomb")
    assert time.perf_counter() - started < 0.05
    assert decode_image(scan_bomb(2000, 10), MAX_PIXELS).size == (2000, 2000)  # a normal scan count decodes


def test_a_jpeg_of_many_empty_marker_segments_is_refused():
    """2.5 M empty APP2 segments (10 MB) held Pillow's header reader for 4.2 s."""
    small = photo()
    padded = small[:2] + b"\xff\xe2\x00\x02" * (MAX_JPEG_SEGMENTS + 1) + small[2:]
    with pytest.raises(BadInput, match="marker segments"):
        decode_image(padded, MAX_PIXELS, "padded")
    assert decode_image(small[:2] + b"\xff\xe2\x00\x02" * 100 + small[2:], MAX_PIXELS).size == (64, 48)


def test_scans_are_counted_in_the_first_picture_only_and_not_in_metadata():
    """Segments are walked by their lengths: scan markers inside metadata (an APP or COM segment, an
    EXIF thumbnail) are not scans, and an MPO's later pictures or bytes after EOI are not decoded."""
    progressive = photo(progressive=True)
    assert jpeg_segments(photo(), MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)[0] == 1
    assert 5 <= jpeg_segments(progressive, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)[0] <= 12
    decoy = b"\xff\xda" * 1000  # a thousand scan markers as metadata bytes
    with_metadata = progressive[:2] + segment(0xFE, decoy) + segment(0xE1, decoy) + progressive[2:]
    second = Image.new("RGB", (64, 48), (255, 0, 0))
    mpo = photo("MPO", progressive=True, save_all=True, append_images=[second] * 20)
    scans = jpeg_segments(progressive, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)[0]
    for data in (with_metadata, mpo, progressive * 21):
        assert jpeg_segments(data, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)[0] == scans
        assert decode_image(data, MAX_PIXELS).size == (64, 48)


def test_a_png_is_not_walked_as_a_jpeg():
    assert decode_image(png_bytes(Image.new("L", (8, 8))), MAX_PIXELS).size == (8, 8)


PREPARATIONS = [{"kind": "imagenet", "resize": 256, "crop": 224}, {"kind": "mnist_digit"}, {"kind": "fashion_item"},
                {"kind": "resized", "size": 32, "colour_mode": "grayscale"}]


def ink_mask(size: int = 64) -> np.ndarray:
    """A drawn 7: True on its strokes."""
    mask = np.zeros((size, size), bool)
    mask[12:18, 14:50] = True
    for row in range(18, 54):
        column = 48 - (row - 18) // 2
        mask[row, column - 3:column + 3] = True
    return mask


def decoded(image: Image.Image, **save: object) -> Image.Image:
    return decode_image(png_bytes_with(image, **save), MAX_PIXELS)


def png_bytes_with(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def test_a_trns_transparency_is_flattened_like_an_alpha_channel():
    """A tRNS chunk on an RGB, greyscale or 1-bit PNG left its transparent pixels as their key
    colour (black here), where an alpha channel puts them on white: the probe's dark-blue 7 on a
    transparent ground got different ImageNet answers as RGBA and as RGB + tRNS."""
    mask = ink_mask()
    alpha = (mask * 255).astype(np.uint8)
    rgb = np.where(mask[..., None], np.array([20, 20, 120], np.uint8), 0).astype(np.uint8)
    grey = np.where(mask, 60, 0).astype(np.uint8)
    black = np.where(mask, 0, 255).astype(np.uint8)
    pairs = {
        "RGB": (decoded(Image.fromarray(rgb), transparency=(0, 0, 0)), Image.fromarray(np.dstack([rgb, alpha]))),
        "L": (decoded(Image.fromarray(grey), transparency=0), Image.fromarray(np.dstack([grey, alpha]), "LA")),
        "1": (decoded(Image.fromarray(~mask), transparency=1), Image.fromarray(np.dstack([black, alpha]), "LA")),
    }
    for mode, (keyed, with_alpha) in pairs.items():
        assert keyed.mode == mode and "transparency" in keyed.info
        for preprocessing in PREPARATIONS:
            np.testing.assert_array_equal(prepare_image(keyed, preprocessing), prepare_image(with_alpha, preprocessing),
                                          err_msg=f"{mode} + tRNS, {preprocessing['kind']}")


def test_a_16_bit_trns_value_is_the_background_and_not_part_of_the_stretch():
    """A 16-bit grey PNG is stretched to 0-255; with a tRNS value, its transparent pixels are white
    and only the opaque ones are stretched (the 7 drawn at one level is then black on white)."""
    mask = ink_mask()
    levels = np.where(mask, 60 * 257, 0).astype(np.uint16)
    levels[20, 20] = 65535  # one bright opaque pixel: the opaque range is 60 * 257 to 65535
    keyed = decoded(Image.fromarray(levels), transparency=0)
    assert keyed.mode == "I;16" and keyed.info["transparency"] == 0
    grey = to_gray(keyed)
    opaque = levels != 0
    assert (grey[~opaque] == 255).all() and grey[20, 20] == 255 and (grey[mask] == 0).all()
    assert to_gray(decoded(Image.fromarray(levels)))[~opaque].max() == 0  # without tRNS: as before
    drawn = decoded(Image.fromarray(np.where(mask, 60 * 257, 0).astype(np.uint16)), transparency=0)
    np.testing.assert_array_equal(to_gray(drawn), np.where(mask, 0, 255))


def test_the_pixel_budget_bounds_what_is_held_at_once_and_lets_an_oversized_image_run_alone():
    budget, most, guard = PixelBudget(100), [], threading.Lock()

    def hold(pixels: int) -> None:
        with budget.holding(pixels):
            with guard:
                most.append(budget.held_pixels)
            time.sleep(0.01)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(hold, [60, 60, 30, 500, 40, 60, 10, 500]))
    assert max(most) <= 100 and budget.held_pixels == 0


def test_the_pixel_budget_serves_waiters_in_arrival_order():
    """Woken all at once, waiters took their turns by chance: a full-budget image waited 2 s of a 3 s
    run behind three threads holding 30 of 100 pixels in a loop. With tickets it goes next."""
    budget, order, guard = PixelBudget(100), [], threading.Lock()
    first_in = threading.Event()

    def hold(name: str, pixels: int, seconds: float) -> None:
        with budget.holding(pixels):
            first_in.set()
            with guard:
                order.append(name)
            time.sleep(seconds)

    with ThreadPoolExecutor(4) as pool:
        pool.submit(hold, "small-1", 30, 0.2)
        first_in.wait(5)
        pool.submit(hold, "whole", 100, 0.01)
        time.sleep(0.05)  # "whole" waits for small-1; later small ones must queue behind it
        for i in (2, 3):
            pool.submit(hold, f"small-{i}", 30, 0.01)
            time.sleep(0.05)  # each takes its ticket before the next arrives
    assert order == ["small-1", "whole", "small-2", "small-3"]
    assert budget.held_pixels == 0


def test_large_uploads_are_decoded_within_the_services_pixel_budget(tmp_path, monkeypatch):
    """Four 40-megapixel 16-bit PNGs at once took the service from 1.5 to 3.8 GB; the batch threads
    of several models could decode ten. Here a budget of one image's pixels decodes one at a time."""
    import app.api.uploads as uploads

    running, most, guard = 0, 0, threading.Lock()

    def counted(image: Image.Image, *args: object) -> Image.Image:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.03)
        try:
            return load_image(image, *args)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(uploads, "load_image", counted)
    settings = make_settings(tmp_path, MAX_DECODING_PIXELS=300 * 300)
    digit = np.zeros((300, 300), np.uint8)
    digit[100:200, 140:160] = 255
    upload = [("file 1", png_bytes(digit))]
    preparers = [upload_preparer({"kind": "mnist_digit"}, settings) for _ in range(4)]  # as 4 requests
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda preparer: preparer(upload), preparers))
    assert all(batch.shape == (1, 28, 28) for batch in batches) and most == 1


def test_a_16_bit_image_is_stretched_holding_one_float64_copy():
    """A 40-megapixel 16-bit PNG (137 KB) peaked at 799 MB of arrays while stretched (20 bytes a
    pixel: two float64 temporaries beside the copy); in place it is 12 (one float64 copy, the result)."""
    import tracemalloc

    image = Image.fromarray((np.arange(1_000_000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(1000, 1000))
    tracemalloc.start()
    try:
        grey = to_gray(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grey.min() == 0 and grey.max() == 255 and peak < 13 * 1_000_000
