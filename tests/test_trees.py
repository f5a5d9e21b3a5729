"""The tree-crown detector: VOC reading, tiling and merging, box coding, NMS, AP, training, /detect."""

from __future__ import annotations

import argparse
import io
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.detection import boxes as box_module
from app.detection.boxes import MAX_CANDIDATES, iou_matrix, merge_tiles, nms
from app.detection.centernet import decode, encode
from app.detection.tiled import detections_from_outputs, tile_for_model
from app.detection.views import FLIPS, averaged_views, mirrored_rows, unmirrored_output, view_count, with_mirrors
from app.main import create_app
from app.preprocessing.tiling import cut_tiles, tile_cores, tile_grid, tile_starts
from tests.conftest import make_settings, png_bytes, train_tiny_digits
from training.trees.ap import average_precision, bootstrap_ap, evaluate_images, match, pooled_ap, precision_recall
from training.trees.data import (
    Scene,
    Splits,
    enlarge_scene,
    flip,
    split_strip,
    tiles_with_boxes,
    training_tiles,
)
from training.trees.voc import image_for, read_voc, read_voc_folder

VOC = """<annotation><filename>plot.tif</filename><size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>Alive</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>22</ymax></bndbox></object>
<object><name>Dead</name><bndbox><xmin>30.5</xmin><ymin>10</ymin><xmax>40</xmax><ymax>20</ymax></bndbox></object>
</annotation>"""


def test_voc_reader(tmp_path):
    (tmp_path / "plot.xml").write_text(VOC)
    Image.new("RGB", (64, 48)).save(tmp_path / "plot.png")
    annotation = read_voc(tmp_path / "plot.xml")
    assert (annotation.width, annotation.height, annotation.filename) == (64, 48, "plot.tif")
    np.testing.assert_array_equal(annotation.boxes, [[1, 2, 11, 22], [30.5, 10, 40, 20]])
    assert annotation.names == ("Alive", "Dead")
    assert image_for(tmp_path / "plot.xml") == tmp_path / "plot.png"
    assert list(read_voc_folder(tmp_path)) == ["plot"]
    (tmp_path / "bad.xml").write_text(VOC.replace("<xmax>11</xmax>", "<xmax>1</xmax>"))
    with pytest.raises(ValueError, match="bad.xml: box .* has no area"):
        read_voc(tmp_path / "bad.xml")


def test_tiling_covers_the_image_and_cores_partition_it():
    assert tile_starts(600, 256, 192) == [0, 192, 344]
    assert tile_starts(256, 256, 192) == [0] and tile_starts(100, 256, 192) == [0]
    origins = tile_grid(600, 300, 256, 64)
    assert origins == [(0, 0), (192, 0), (344, 0), (0, 44), (192, 44), (344, 44)]
    cores = tile_cores(origins, 256, 600, 300)
    assert sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in cores) == 600 * 300
    assert cores[0] == (0.0, 0.0, 224.0, 150.0) and cores[-1] == (396.0, 150.0, 600.0, 300.0)
    pixels = np.arange(300 * 600 * 3, dtype=np.int64).reshape(300, 600, 3)
    tiles, cut_origins = cut_tiles(pixels, 256, 64)
    assert tiles.shape == (6, 256, 256, 3) and cut_origins == origins
    np.testing.assert_array_equal(tiles[4], pixels[44:300, 192:448])
    small, _ = cut_tiles(np.ones((10, 20, 3)), 16, 4)
    assert small.shape == (2, 16, 16, 3) and small[0, 12:].sum() == 0  # padded below


def test_merge_keeps_a_tree_cut_by_a_tile_border_once():
    # A tree at x 300-340: whole in tile 2 (starts 192), cut at 256 in tile 1 (ends 256).
    cores = tile_cores([(0, 0), (192, 0)], 256, 448, 256)
    cut = (np.array([[300.0, 10, 256, 50]]), np.array([0.9]))  # what tile 1 sees: its border cuts it
    whole = (np.array([[300.0, 10, 340, 50]]), np.array([0.8]))
    boxes, scores = merge_tiles([cut, whole], cores, 448, 256)
    np.testing.assert_array_equal(boxes, [[300, 10, 340, 50]])
    assert scores.tolist() == [0.8]
    # Two detections of one tree from the same tile: NMS keeps the better one.
    twice = (np.array([[10.0, 10, 40, 40], [11, 11, 41, 41]]), np.array([0.5, 0.7]))
    boxes, scores = merge_tiles([twice, (np.zeros((0, 4)), np.zeros(0))], cores, 448, 256)
    assert scores.tolist() == [0.7] and boxes.tolist() == [[11, 11, 41, 41]]


def test_iou_and_nms_on_exact_boxes():
    a, b, c = [0, 0, 10, 10], [0, 5, 10, 15], [20, 20, 30, 30]
    np.testing.assert_allclose(iou_matrix([a], [a, b, c]), [[1.0, 50 / 150, 0.0]])
    close = [1, 0, 11, 10]  # IoU with a = 90 / 110
    assert nms(np.array([a, close, c, b]), np.array([0.6, 0.9, 0.5, 0.4])).tolist() == [1, 2, 3]
    assert nms(np.array([a, close]), np.array([0.6, 0.9]), iou_threshold=0.95).tolist() == [1, 0]


def quadratic_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """The NMS `/detect` shipped with before it went linear: the reference its results must match."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = iou_matrix(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for index in order:
        if suppressed[index]:
            continue
        keep.append(int(index))
        suppressed |= overlaps[index] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def random_boxes(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Crowded boxes around a few centres (so many overlap), with tied scores, exact duplicates and
    boxes of no area among them."""
    centres = rng.uniform(0, 200, (max(1, count // 8), 2))[rng.integers(0, max(1, count // 8), count)]
    centres += rng.normal(0, 6, (count, 2))
    sizes = rng.uniform(4, 40, (count, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = np.round(rng.random(count), 2)  # ties
    if count >= 4:
        boxes[1] = boxes[0]  # a duplicate
        boxes[2, 2] = boxes[2, 0]  # no width
        scores[3] = scores[0]
    return boxes, scores


@pytest.mark.parametrize("iou_threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0])
def test_linear_nms_keeps_exactly_what_the_quadratic_one_kept(iou_threshold):
    rng = np.random.default_rng(int(iou_threshold * 100))
    for count in (0, 1, 2, 3, 5, 17, 64, 300, 1000):
        boxes, scores = random_boxes(rng, count)
        expected = quadratic_nms(boxes, scores, iou_threshold)
        assert nms(boxes, scores, iou_threshold).tolist() == expected.tolist()
        assert nms(boxes, scores, iou_threshold, max_candidates=None).tolist() == expected.tolist()
        assert nms(boxes, scores, iou_threshold).dtype == np.int64


def test_nms_takes_only_the_best_candidates():
    # A grid of disjoint boxes: NMS would keep them all, so the cap alone decides how many are kept.
    side = int(np.ceil(np.sqrt(MAX_CANDIDATES + 700)))
    xs, ys = np.meshgrid(np.arange(side) * 10.0, np.arange(side) * 10.0)
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + 8, ys.ravel() + 8], axis=1)
    scores = np.random.default_rng(0).random(len(boxes))
    best = np.argsort(-scores, kind="stable")
    kept = nms(boxes, scores)
    assert len(boxes) > MAX_CANDIDATES and kept.tolist() == best[:MAX_CANDIDATES].tolist()
    assert nms(boxes, scores, max_candidates=10).tolist() == best[:10].tolist()
    assert len(nms(boxes, scores, max_candidates=None)) == len(boxes)
    # Under the cap, the cap changes nothing: the same boxes as the quadratic NMS.
    boxes, scores = random_boxes(np.random.default_rng(1), 200)
    assert nms(boxes, scores, max_candidates=200).tolist() == quadratic_nms(boxes, scores).tolist()
    best = np.argsort(-scores, kind="stable")[:50]
    assert nms(boxes, scores, max_candidates=50).tolist() == best[quadratic_nms(boxes[best], scores[best])].tolist()


def test_every_cell_firing_is_answered_with_at_most_the_cap():
    """score_threshold 0 on noise: every cell of every tile is a candidate. The image keeps at most
    MAX_CANDIDATES boxes, and no candidates x candidates overlap matrix is ever made."""
    tiled = tile_for_model(np.zeros((1200, 1200, 3), np.uint8), 64, 16)
    outputs = np.zeros((len(tiled.batch), 8, 8, 5), np.float32)
    outputs[..., 0], outputs[..., 1:3] = 0.25, 0.5  # flat heat: every cell is a peak; boxes one cell wide
    cells = (1200 // 8) ** 2
    assert cells > 2 * MAX_CANDIDATES
    tracemalloc.start()
    try:
        boxes, scores = detections_from_outputs(outputs, tiled, 8, 0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(boxes) == len(scores) == MAX_CANDIDATES  # disjoint boxes: NMS keeps every candidate it sees
    assert peak < 8 * MAX_CANDIDATES**2 / 4  # a quarter of one float64 MAX_CANDIDATES x MAX_CANDIDATES matrix


def test_encode_then_decode_returns_the_boxes():
    boxes = np.array([[10, 20, 50, 70], [100, 100, 130, 128], [200, 5, 250, 40]], np.float64)
    target = encode(boxes, (32, 32), 8)
    assert (target[..., 5] == 1.0).sum() == 3 and (target[..., 5] == 0.5).sum() == 3 * 8
    assert target[..., 0].max() == 1.0
    assert target[5, 3, 0] == 1.0 and target[5, 3, 5] == 1.0  # centre (30, 45) → cell row 5, col 3
    np.testing.assert_allclose(target[5, 3, 1:5], [30 / 8 - 3, 45 / 8 - 5, np.log(5), np.log(50 / 8)], rtol=1e-6)
    np.testing.assert_allclose(target[6, 2, 1:3], [30 / 8 - 2, 45 / 8 - 6], rtol=1e-6)  # a neighbour cell
    decoded, scores = decode(target[..., :5], 8, 0.5)
    order = np.argsort(decoded[:, 0])
    np.testing.assert_allclose(decoded[order], boxes, atol=1e-4)
    assert scores.tolist() == [1.0, 1.0, 1.0]
    assert decode(target[..., :5] * [0.4, 1, 1, 1, 1], 8, 0.5)[0].shape == (0, 4)  # below the threshold


@pytest.mark.parametrize("left_right, top_bottom", [(True, False), (False, True), (True, True)])
def test_a_mirrored_tiles_output_flipped_back_is_the_tiles_own(left_right, top_bottom):
    side, stride = 256, 8
    # centres off the cell borders: a centre on a border belongs to the cell after it, seen either way
    boxes = np.array([[10, 20, 50, 70], [100, 100, 131, 128], [200, 5, 251, 44]], np.float64)
    mirrored_boxes = boxes.copy()
    if left_right:
        mirrored_boxes[:, [0, 2]] = side - boxes[:, [2, 0]]
    if top_bottom:
        mirrored_boxes[:, [1, 3]] = side - boxes[:, [3, 1]]
    grid = (side // stride, side // stride)
    seen = encode(mirrored_boxes, grid, stride)[None, ..., :5]
    back = unmirrored_output(seen, left_right, top_bottom)[0]
    own = encode(boxes, grid, stride)[..., :5]
    np.testing.assert_allclose(back[..., 0], own[..., 0], atol=1e-6)  # the heat
    geometry = encode(boxes, grid, stride)[..., 5] > 0  # cells that carry a box's offset and size
    np.testing.assert_allclose(back[geometry][:, 1:], own[geometry][:, 1:], atol=1e-5)
    decoded, _ = decode(back, stride, 0.5)
    np.testing.assert_allclose(decoded[np.argsort(decoded[:, 0])], boxes, atol=1e-4)


def test_mirrored_views_run_as_one_batch_and_average_back_to_each_tile():
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)

    def model(batch):  # any per-tile function of the pixels, as a detector's (N, 2, 2, 5) output
        pooled = batch.reshape(len(batch), 2, 8, 2, 8, 3).mean(axis=(2, 4))
        return np.concatenate([pooled, pooled[..., :2] ** 2], axis=-1)

    batch = with_mirrors(tiles, 4)
    assert batch.shape == (12, 16, 16, 3)
    np.testing.assert_array_equal(batch[3:6], tiles[:, :, ::-1])  # block 2: left-right mirrors
    np.testing.assert_array_equal(batch[9:12], tiles[:, ::-1, ::-1])
    averaged = averaged_views(model(batch), 4)
    expected = np.zeros_like(averaged)
    for left_right, top_bottom in FLIPS:
        seen = tiles[:, :, ::-1] if left_right else tiles
        seen = seen[:, ::-1] if top_bottom else seen
        out = model(seen)
        out = out[:, :, ::-1] if left_right else out
        out = (out[:, ::-1] if top_bottom else out).copy()
        if left_right:
            out[..., 1] = 1 - out[..., 1]
        if top_bottom:
            out[..., 2] = 1 - out[..., 2]
        expected += out / 4
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    assert with_mirrors(tiles, 1) is tiles and averaged_views(model(tiles), 1).shape == (3, 2, 2, 5)
    assert view_count({}) == 1 and view_count({"flip_views": 4}) == 4 and view_count({"flip_views": 4}, 2) == 2
    for bad in (3, None, "4", 2.0, True):  # a manifest's value is checked as strictly as a request's
        with pytest.raises(ValueError, match="1, 2 or 4"):
            view_count({"flip_views": bad})


@pytest.mark.parametrize("views", [1, 2, 4])
def test_pieces_of_the_mirrored_batch_are_its_rows_made_alone(views):
    tiles = np.random.default_rng(4).random((5, 6, 6, 3)).astype(np.float32)
    whole = with_mirrors(tiles, views)
    spans = [(0, 3), (3, 7), (4, 5), (0, 5 * views), (5 * views - 4, 5 * views)]
    for start, stop in [(start, stop) for start, stop in spans if stop <= len(whole)]:
        piece = mirrored_rows(tiles, views, start, stop)
        np.testing.assert_array_equal(piece, whole[start:stop])
        assert piece.flags.c_contiguous


def test_giou_and_the_box_term_of_the_loss_on_exact_boxes():
    from training.trees.model import box_corners, centernet_loss, giou

    same = np.array([[0.0, 0.0, 2.0, 2.0]], np.float32)
    apart = np.array([[3.0, 0.0, 5.0, 2.0]], np.float32)  # enclosing box 5x2 = 10, union 8
    inside = np.array([[0.0, 0.0, 1.0, 2.0]], np.float32)  # IoU 1/2, enclosing box = the union
    assert np.allclose(np.asarray(giou(same, same)), [1.0])
    assert np.allclose(np.asarray(giou(same, apart)), [-0.2])
    assert np.allclose(np.asarray(giou(same, inside)), [0.5])
    # offset (0.5, 0.5), log size (log 2, log 1) → a 2x1 box centred at (0.5, 0.5)
    corners = np.asarray(box_corners(np.array([[0.5, 0.5, np.log(2.0), 0.0]], np.float32)))
    assert np.allclose(corners, [[-0.5, 0.0, 1.5, 1.0]])

    target = np.zeros((1, 4, 4, 6), np.float32)
    target[0, 1, 1] = (1.0, 0.5, 0.5, np.log(2.0), np.log(2.0), 1.0)  # one centre cell, a 2x2 box
    output = np.zeros((1, 4, 4, 5), np.float32)
    output[0, 1, 1] = (0.5, 0.5, 0.5, np.log(2.0), np.log(1.0))  # right centre, half the height
    l1_only, with_giou = centernet_loss(0.0)(target, output), centernet_loss(2.0)(target, output)
    assert np.isclose(float(with_giou) - float(l1_only), 2.0 * (1.0 - 0.5), atol=1e-5)
    output[0, 1, 1, 4] = np.log(2.0)  # the exact box: the GIoU term vanishes
    assert np.isclose(float(centernet_loss(2.0)(target, output)), float(centernet_loss(0.0)(target, output)))


def test_decode_keeps_only_local_peaks():
    output = np.zeros((4, 4, 5))
    output[1, 1, 0], output[1, 2, 0], output[3, 3, 0] = 0.9, 0.8, 0.6
    _, scores = decode(output, 8, 0.1)
    np.testing.assert_allclose(scores, [0.9, 0.6])


def test_average_precision_on_hand_made_boxes():
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 31, 31], [0, 0, 10, 11]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    sorted_scores, hits = match(boxes, scores, truth)
    assert hits.tolist() == [True, False, True, False]  # the last is a duplicate of the first tree
    # Precision 1 up to recall 0.5, then 2/3 at recall 1.
    assert average_precision(sorted_scores, hits, 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert precision_recall(sorted_scores, hits, 2, 0.75) == (0.5, 0.5)
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == 1.0
    assert average_precision(np.array([0.9]), np.array([False]), 2) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    results = evaluate_images([(truth, np.array([0.5, 0.4]))], [truth])
    assert pooled_ap(results) == 1.0 and bootstrap_ap(results, samples=50) == (1.0, 1.0)
    low, high = bootstrap_ap(evaluate_images([(boxes, scores)], [truth]), block=16, samples=200)
    assert 0.0 <= low <= 0.8333 <= high <= 1.0


def test_held_out_strip_and_flips():
    pixels = np.zeros((400, 300, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 30], [10, 280, 40, 320], [50, 350, 70, 380]], np.float64)
    top, strip = split_strip(Scene("s", pixels, boxes), 0.25)
    assert top.pixels.shape == (300, 300, 3) and strip.pixels.shape == (100, 300, 3)
    np.testing.assert_array_equal(top.boxes, [[10, 10, 30, 30]])
    np.testing.assert_array_equal(strip.boxes, [[10, 0, 40, 20], [50, 50, 70, 80]])  # centre on the cut: strip
    tiles, tile_boxes = tiles_with_boxes(top, 256, 128)
    assert tiles.shape[1:] == (256, 256, 3)
    flipped, moved = flip(tiles[:1], tile_boxes[:1], horizontal=True, vertical=True)
    np.testing.assert_array_equal(moved[0], [[226, 226, 246, 246]])
    assert np.shares_memory(flipped, tiles) is False


def test_enlarged_scenes_and_recoloured_tiles():
    scene = Scene("s", np.full((40, 50, 3), 100, np.uint8), np.array([[5, 5, 15, 25]], np.float64))
    big = enlarge_scene(scene, 2.0)
    assert big.pixels.shape == (80, 100, 3)
    np.testing.assert_array_equal(big.boxes, [[10, 10, 30, 50]])
    tiles, boxes = training_tiles([scene], 32, 8, flips=False, colour_copies=2, seed=0)
    assert len(tiles) == 3 * len(training_tiles([scene], 32, 8, flips=False)[0]) and len(boxes) == len(tiles)
    assert tiles.dtype == np.uint8
    first, second = tiles[0], tiles[len(tiles) // 3]  # a tile and its first recoloured copy
    assert not np.array_equal(first, second)
    assert np.array_equal(boxes[0], boxes[len(tiles) // 3])  # recolouring moves no box


def test_upscaled_detection_answers_in_the_original_pixels():
    """The detector sees the image enlarged ×2; its boxes come back in the uploaded image's pixels."""
    original = np.array([[10, 12, 30, 28]], np.float64)
    tiled = tile_for_model(np.zeros((60, 100, 3), np.uint8), 64, 16, upscale=2.0)
    assert (tiled.width, tiled.height) == (200, 120) and tiled.batch.shape[1:] == (64, 64, 3)
    outputs = []
    for left, top in tiled.origins:  # a perfect model: the encoded target of each tile
        shifted = original * 2 - np.array([left, top, left, top])
        centre = (shifted[:, :2] + shifted[:, 2:]) / 2
        inside = ((centre >= 0) & (centre < 64)).all(axis=1)
        outputs.append(encode(shifted[inside], (8, 8), 8)[..., :5])
    boxes, scores = detections_from_outputs(np.stack(outputs), tiled, 8, 0.5)
    np.testing.assert_allclose(boxes, original, atol=1e-4)
    assert scores.tolist() == [1.0]


# --- training on synthetic rectangles, and serving ---------------------------------------------

TILE = 64


def rectangles_scene(seed: int, size: int = 128, count: int = 6) -> Scene:
    """Bright coloured squares (10-20 px) on a dark noisy ground: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size, size, 3)) * 40).astype(np.uint8)
    boxes = []
    for _ in range(count):
        side = int(rng.integers(10, 20))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        pixels[y:y + side, x:x + side] = rng.integers(150, 255, 3)
        boxes.append((x, y, x + side, y + side))
    return Scene(f"rect{seed}", pixels, np.array(boxes, np.float64))


def tiny_args(**overrides) -> argparse.Namespace:
    """The command's own defaults (so a new flag needs no change here), shrunk to a tiny run."""
    from training.trees.pipeline import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    values = dict(vars(parser.parse_args([])), tile=TILE, train_overlap=32, stage1_epochs=3, stage2_epochs=1,
                  steps_per_epoch=8, batch_size=8, learning_rate=5e-3, finetune_learning_rate=1e-3,
                  score_threshold=0.2, no_compare=True, seed=3, resume=False, quiet=True, upscale=1.0,
                  colour_copies=0)
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.trees.pipeline import train_on

    settings = make_settings(tmp_path_factory.mktemp("trees"), MAX_DETECT_TILES=120)
    splits = Splits(train=[rectangles_scene(s) for s in range(4)], in_domain=[rectangles_scene(10)],
                    cross_site=[rectangles_scene(11)])
    version = train_on(splits, None, tiny_args(), settings, dataset="synthetic", data_fingerprint="test")
    train_tiny_digits(settings)
    return settings, version


def test_training_steps_lower_the_loss_and_publish_a_detector(trained):
    settings, version = trained
    from training.evaluation import load_stored

    _, manifest = load_stored(settings, "trees", version)
    assert manifest.task == "detect" and manifest.labels == ["tree"]
    detection = manifest.model_dump()["detection"]
    reference = np.array(detection.pop("colour_reference"))  # the training images' colours, per channel
    assert detection == {"tile": TILE, "overlap": 16, "stride": 8, "score_threshold": 0.2, "nms_iou": 0.5,
                         "upscale": 1.0, "flip_views": 4}
    assert reference.shape == (3, 65) and (np.diff(reference, axis=1) >= 0).all()
    assert reference.min() >= 0 and reference.max() <= 255
    from app.runs.db import open_registry
    from app.runs.registry import get_run

    with open_registry(settings.database_url)() as session:
        history = get_run(session, manifest.run_id).history
    stage1 = [row["loss"] for row in history if row["stage"] == "random-stage1"]
    assert len(stage1) == 3 and stage1[-1] < stage1[0]
    assert [(row["epoch"], row["stage"]) for row in history][-2:] == [(3, "random-stage1"), (4, "stage2")]
    metrics = manifest.test_metrics["fine_tuned"]
    assert set(metrics) == {"in_domain", "cross_site"} and metrics["in_domain"]["boxes"] == 6


@pytest.fixture(scope="module")
def detect_client(trained):
    with TestClient(create_app(trained[0])) as client:
        yield client


def test_detect_answers_boxes_in_image_coordinates(detect_client):
    scene = rectangles_scene(20, size=150)
    response = detect_client.post("/detect?score_threshold=0.05",
                                  files={"file": ("plot.png", png_bytes(scene.pixels), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "trees" and (body["width"], body["height"]) == (150, 150)
    assert body["count"] == len(body["detections"]) and body["score_threshold"] == 0.05
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True) and all(s >= 0.05 for s in scores)
    for d in body["detections"]:
        assert 0 <= d["x1"] < d["x2"] <= 150 and 0 <= d["y1"] < d["y2"] <= 150 and d["label"] == "tree"
    default = detect_client.post("/detect", files={"file": ("p.png", png_bytes(scene.pixels))}).json()
    assert default["score_threshold"] == 0.2 and default["count"] <= body["count"] and default["flip_views"] == 4
    one_view = detect_client.post("/detect?flip_views=1&score_threshold=0.05",
                                  files={"file": ("p.png", png_bytes(scene.pixels))}).json()
    assert one_view["flip_views"] == 1 and body["flip_views"] == 4 and one_view["detections"] != body["detections"]


def test_detect_on_noise_with_every_peak_answers_at_most_the_cap(detect_client, monkeypatch):
    noise = np.random.default_rng(5).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    request = ("/detect?flip_views=1&score_threshold=0", {"file": ("n.jpg", png_bytes(noise, "JPEG"), "image/jpeg")})
    uncapped = detect_client.post(request[0], files=request[1]).json()
    assert uncapped["count"] > 40
    monkeypatch.setattr(box_module, "MAX_CANDIDATES", 40)
    capped = detect_client.post(request[0], files=request[1]).json()
    assert capped["count"] == len(capped["detections"]) <= 40
    # The cap keeps the best-scored candidates, so the strongest detections are the same.
    assert capped["detections"][:5] == uncapped["detections"][:5]


def test_detect_requests_are_tiled_and_run_a_few_at_a_time(trained, monkeypatch):
    """The tiles of a large image weigh up to ~0.8 GB; MAX_DETECTS_IN_FLIGHT bounds how many exist at once."""
    import threading

    import app.api.detect as detect_route

    running, most, guard = 0, 0, threading.Lock()
    tile_images = detect_route.tile_images

    def counted(*args):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return tile_images(*args)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(detect_route, "tile_images", counted)
    settings = trained[0].model_copy(update={"MAX_DETECTS_IN_FLIGHT": 1})
    upload = {"file": ("p.png", png_bytes(rectangles_scene(3, size=150).pixels))}
    with TestClient(create_app(settings)) as client:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: client.post("/detect?flip_views=1", files=upload).status_code, range(4)))
    assert statuses == [200] * 4 and most == 1


def test_detect_draws_png(detect_client):
    scene = rectangles_scene(21, size=100)
    response = detect_client.post("/detect?draw=true&score_threshold=0",
                                  files={"file": ("p.jpg", png_bytes(scene.pixels, "JPEG"), "image/jpeg")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(response.content))
    assert drawn.size == (100, 100) and drawn.mode == "RGB"


def test_detect_bad_inputs(detect_client):
    image = png_bytes(np.zeros((40, 40, 3), np.uint8))
    assert detect_client.post("/detect", files={"file": ("x.png", b"not an image")}).status_code == 422
    assert detect_client.post("/detect", files={"file": ("x.png", b"")}).status_code == 422
    assert detect_client.post("/detect?score_threshold=1.5", files={"file": ("x.png", image)}).status_code == 422
    assert detect_client.post("/detect").status_code == 415  # no body, so no multipart form with a file
    assert detect_client.post("/detect?model=nope", files={"file": ("x.png", image)}).status_code == 404
    not_detector = detect_client.post("/detect?model=digits", files={"file": ("x.png", image)})
    assert not_detector.status_code == 404 and "not a detector" in not_detector.json()["detail"]
    assert detect_client.post("/detect?version=7", files={"file": ("x.png", image)}).status_code == 404
    big = png_bytes(np.zeros((600, 600, 3), np.uint8))  # 169 tiles of 64 px > the limit of 120 passes
    too_big = detect_client.post("/detect", files={"file": ("big.png", big)})
    assert too_big.status_code == 413 and "tile passes" in too_big.json()["detail"]
    medium = png_bytes(np.zeros((250, 250, 3), np.uint8))  # 25 tiles: 100 passes in four views, 25 in one
    assert detect_client.post("/detect?flip_views=1", files={"file": ("m.png", medium)}).status_code == 200
    together = detect_client.post("/detect", files=[("file", ("a.png", medium)), ("file", ("b.png", medium))])
    assert together.status_code == 413 and "b.png" in together.json()["detail"]
    assert "with the images before it" in together.json()["detail"]
    assert detect_client.post("/detect?flip_views=3", files={"file": ("x.png", image)}).status_code == 422
    assert detect_client.post("/detect?flip_views=8", files={"file": ("x.png", image)}).status_code == 422


class NoSlot:
    """Stands in for the detect slots: a request that takes one fails the test."""

    async def __aenter__(self) -> None:
        raise AssertionError("the request took a detect slot")

    async def __aexit__(self, *exc: object) -> bool:
        return False


def test_the_tile_limit_is_checked_from_the_headers_before_a_slot_or_any_decoding(detect_client):
    """A 6320 x 6320 PNG (178 KB) got its 413 after 0.84 s of decoding and +0.3 GB, inside a slot."""
    from tests.test_bad_input import huge_png

    state = detect_client.app.state
    slots, state.detect_slots = state.detect_slots, NoSlot()  # not monkeypatch: its undo deletes a State's attribute
    try:
        header_only = huge_png(600, 600)  # a 600 x 600 header, no pixel data: decoding it would fail
        too_big = detect_client.post("/detect?flip_views=1", files={"file": ("big.png", header_only)})
        assert too_big.status_code == 413 and "169 tiles of 64 px" in too_big.json()["detail"]
        exif = Image.Exif()
        exif[0x0112] = 6  # turned a quarter: decoded as 250 x 600, the same count of tiles
        buffer = io.BytesIO()
        Image.new("RGB", (600, 250)).save(buffer, "JPEG", exif=exif)
        turned = detect_client.post("/detect?flip_views=2", files={"file": ("t.jpg", buffer.getvalue())})
        assert turned.status_code == 413 and "needs 130 tile passes" in turned.json()["detail"]
    finally:
        state.detect_slots = slots
    assert len(tile_grid(600, 250, TILE, 16)) == len(tile_grid(250, 600, TILE, 16)) == 65


def detect_for_leaving_client(client: TestClient, image: bytes, gone: Callable[[], bool]) -> list[dict]:
    """POST /detect straight through the app's ASGI interface, as a client whose connection is
    closed once `gone()` says so; answers the messages the app sent."""
    import anyio
    import httpx

    request = httpx.Request("POST", "http://testserver/detect?flip_views=4", files={"file": ("p.png", image)})
    body = request.read()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/detect", "raw_path": b"/detect", "query_string": b"flip_views=4", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    unread, sent = [{"type": "http.request", "body": body, "more_body": False}], []

    async def receive() -> dict:
        if unread:
            return unread.pop()
        if gone():
            return {"type": "http.disconnect"}
        await anyio.sleep_forever()  # as a server does while the client is connected

    async def send(message: dict) -> None:
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)
    return sent


def test_a_request_whose_client_left_takes_no_slot_and_stops_between_pieces(detect_client, monkeypatch):
    """Four clients that gave up after 1 s on a 1200 x 1200 image (17 s each) made the next request
    wait 60 s instead of 0.4 s: their detections ran to the end, holding the detect slots."""
    from app.store.store import LoadedModel

    calls = []
    infer = LoadedModel.infer

    async def counted(self, inputs, *args, **kwargs):
        calls.append(kwargs["rows"])
        return await infer(self, inputs, *args, **kwargs)

    monkeypatch.setattr(LoadedModel, "infer", counted)
    image = png_bytes(rectangles_scene(3, size=250).pixels)  # 25 tiles x 4 views = 100 rows: 7 pieces of 16
    slots = detect_client.app.state.detect_slots
    sent = detect_for_leaving_client(detect_client, image, gone=lambda: True)  # left before its turn
    assert sent[0]["status"] == 499 and calls == []
    sent = detect_for_leaving_client(detect_client, image, gone=lambda: len(calls) >= 1)  # left while running
    assert sent[0]["status"] == 499 and calls == [16]
    sent = detect_for_leaving_client(detect_client, image, gone=lambda: False)  # stayed
    assert sent[0]["status"] == 200 and calls[1:] == [16] * 6 + [4]
    assert slots._value == detect_client.app.state.settings.MAX_DETECTS_IN_FLIGHT  # every slot given back


def test_detect_several_images_in_one_request_answers_each_in_order(detect_client):
    scenes = [rectangles_scene(seed, size=size) for seed, size in ((30, 150), (31, 90))]
    files = [("file", (f"{i}.png", png_bytes(s.pixels), "image/png")) for i, s in enumerate(scenes)]
    body = detect_client.post("/detect?score_threshold=0.05", files=files).json()
    assert body["count"] == 2
    assert [(r["filename"], r["width"]) for r in body["results"]] == [("0.png", 150), ("1.png", 90)]
    alone = detect_client.post("/detect?score_threshold=0.05", files=[files[1]]).json()
    assert [d["score"] for d in alone["detections"]] == pytest.approx(
        [d["score"] for d in body["results"][1]["detections"]], abs=1e-3)
    assert detect_client.post("/detect?draw=true", files=files).status_code == 422


def test_a_detector_whose_manifest_asks_for_impossible_views_is_refused(trained, tmp_path):
    import json
    import shutil

    from app.store.store import load_version

    settings, version = trained
    copy = tmp_path / "trees" / str(version)
    shutil.copytree(settings.MODEL_DIR / "trees" / str(version), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["detection"]["flip_views"] = 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="1, 2 or 4"):
        load_version(copy, "/CPU:0")


def test_a_resumed_run_must_repeat_its_flags():
    from training.trees.pipeline import refuse_changed_flags

    class Run:
        run_id = "r1"

        def recorded_params(self):
            return {"giou_weight": 0.0, "train_scales": [2.0], "seed": 3}

    refuse_changed_flags(Run(), {"giou_weight": 0.0, "train_scales": [2.0], "seed": 3, "newer_flag": 1})
    with pytest.raises(ValueError, match=r"train_scales \[2.0\] -> \[1.6, 2.0\]"):
        refuse_changed_flags(Run(), {"giou_weight": 0.0, "train_scales": [1.6, 2.0], "seed": 3})


def test_training_tiles_at_several_scales_hold_every_scales_boxes():
    scene = rectangles_scene(0)
    one = training_tiles([enlarge_scene(scene, 1.0)], TILE, 32, flips=False)
    two = training_tiles([enlarge_scene(scene, s) for s in (1.0, 1.5)], TILE, 32, flips=False)
    larger = training_tiles([enlarge_scene(scene, 1.5)], TILE, 32, flips=False)
    assert len(two[0]) == len(one[0]) + len(larger[0])
    sides = np.concatenate([b[:, 2] - b[:, 0] for b in larger[1] if len(b)])
    assert sides.max() > np.concatenate([b[:, 2] - b[:, 0] for b in one[1] if len(b)]).max()


def test_the_backbone_cut_anywhere_below_stride_8_computes_the_same_features():
    from training.trees.model import build_bottom, build_middle

    whole, lower, middle = build_bottom(TILE), build_bottom(TILE, 3), build_middle(TILE, 3)
    for part in (lower, middle):
        for layer in part.layers[1:]:  # after the input
            layer.set_weights(whole.get_layer(layer.name).get_weights())
    tiles = np.random.default_rng(0).normal(size=(2, TILE, TILE, 3)).astype(np.float32)
    assert middle.input.shape[1:] == (TILE // 4, TILE // 4, 24) and build_middle(TILE, 5) is None
    np.testing.assert_allclose(np.asarray(middle(lower(tiles))), np.asarray(whole(tiles)), atol=1e-5)


@pytest.mark.parametrize("head_stride4", [False, True])
def test_fine_tuning_from_block_3_trains_the_stride_8_blocks_and_keeps_the_ones_below(tmp_path, head_stride4):
    import keras

    from training.evaluation import load_stored
    from training.trees.model import build_bottom, build_middle
    from training.trees.pipeline import train_on

    settings = make_settings(tmp_path)
    splits = Splits(train=[rectangles_scene(s) for s in range(2)], in_domain=[rectangles_scene(10)],
                    cross_site=[rectangles_scene(11)])
    args = tiny_args(finetune_from_block=3, head_stride4=head_stride4, stage1_epochs=1, steps_per_epoch=4)
    version = train_on(splits, None, args, settings, dataset="synthetic", data_fingerprint="test")
    detector, _ = load_stored(settings, "trees", version)
    keras.utils.set_random_seed(args.seed)
    bottom, middle = build_bottom(TILE, 3), build_middle(TILE, 3)  # as training built them, before training
    trained_bottom, trained_middle = detector.get_layer("backbone_bottom"), detector.get_layer("backbone_middle")
    assert all(np.array_equal(a, b) for a, b in zip(bottom.get_weights(), trained_bottom.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(middle.get_weights(), trained_middle.get_weights(), strict=True))
    assert any(layer.name == "head_detail" for layer in detector.get_layer("head").layers) == head_stride4


def test_a_head_reading_the_stride_4_map_still_answers_at_stride_8():
    import keras

    from training.trees.model import STRIDE, build_head
    from training.trees.pipeline import detail_channels

    keras.utils.set_random_seed(1)
    plain = build_head(TILE)
    keras.utils.set_random_seed(1)
    head = build_head(TILE, detail_channels=24)
    side = TILE // STRIDE
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(1, side * 2, side * 2, 24)), rng.normal(size=(1, side, side, 40)),
            rng.normal(size=(1, side // 2, side // 2, 112))]
    output = np.asarray(head(maps))
    assert output.shape == (1, side, side, 5)
    np.testing.assert_allclose(output, np.asarray(plain(maps[1:])), atol=1e-6)  # starts as the plain head
    assert detail_channels(tiny_args(head_stride4=True, finetune_from_block=3)) == 24
    assert detail_channels(tiny_args(finetune_from_block=3)) == 0
    with pytest.raises(ValueError, match="finetune-from-block"):
        detail_channels(tiny_args(head_stride4=True))
