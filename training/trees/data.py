"""The tree-crown data: scenes read from VOC folders, the held-out splits, and training tiles.

Held out, never seen in training:
  in-domain   the bottom quarter of each YELL image (no training tile reaches into it),
  cross-site  the whole OSBS_029 and SOAP_061 images (other forests).
Every box is one class, tree (SOAP_061's Alive/Dead included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.detection.tiled import enlarge
from app.preprocessing.colours import match_colours
from app.preprocessing.tiling import cut_tiles
from training.trees.voc import read_voc_folder

IN_DOMAIN = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
CROSS_SITE = ("OSBS_029", "SOAP_061")
STRIP_FRACTION = 0.25
LABEL = "tree"


@dataclass(frozen=True)
class Scene:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2


def load_scenes(folder: Path) -> dict[str, Scene]:
    scenes = {}
    for name, (image_path, annotation) in read_voc_folder(folder).items():
        with Image.open(image_path) as image:
            pixels = np.asarray(image.convert("RGB"))
        scenes[name] = Scene(name, pixels, annotation.boxes)
    return scenes


def crop_scene(scene: Scene, top: int, bottom: int, suffix: str) -> Scene:
    """Rows [top, bottom) with the boxes whose centre lies in them, clipped to the crop."""
    centre_y = (scene.boxes[:, 1] + scene.boxes[:, 3]) / 2
    inside = (centre_y >= top) & (centre_y < bottom)
    boxes = scene.boxes[inside] - np.array([0, top, 0, top], np.float64)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, bottom - top)
    return Scene(f"{scene.name}{suffix}", scene.pixels[top:bottom], boxes)


def split_strip(scene: Scene, fraction: float = STRIP_FRACTION) -> tuple[Scene, Scene]:
    """(the training part above, the held-out bottom strip)."""
    cut = int(round(scene.pixels.shape[0] * (1 - fraction)))
    return crop_scene(scene, 0, cut, ":top"), crop_scene(scene, cut, scene.pixels.shape[0], ":strip")


@dataclass(frozen=True)
class Splits:
    train: list[Scene]
    in_domain: list[Scene]
    cross_site: list[Scene]


def make_splits(scenes: dict[str, Scene]) -> Splits:
    """The NEON split when its images are there; otherwise (a user's folder) every image gives its
    top to training and its bottom strip to the in-domain test."""
    in_domain_names = [n for n in IN_DOMAIN if n in scenes] or sorted(scenes)
    cross_site = [scenes[n] for n in CROSS_SITE if n in scenes and n not in in_domain_names]
    train, held_out = zip(*(split_strip(scenes[n]) for n in in_domain_names), strict=True)
    return Splits(list(train), list(held_out), cross_site)


def tiles_with_boxes(scene: Scene, tile: int, overlap: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Overlapping tiles of a scene and, for each, the boxes whose centre lies in it (tile pixels)."""
    tiles, origins = cut_tiles(scene.pixels, tile, overlap)
    centre = (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2
    boxes = []
    for left, top in origins:
        inside = ((centre[:, 0] >= left) & (centre[:, 0] < left + tile)
                  & (centre[:, 1] >= top) & (centre[:, 1] < top + tile))
        shifted = scene.boxes[inside] - np.array([left, top, left, top], np.float64)
        boxes.append(shifted.clip(0, tile))
    return tiles, boxes


def flip(tiles: np.ndarray, boxes: list[np.ndarray], horizontal: bool, vertical: bool
         ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aerial views have no up or left: flipped tiles are new, equally real examples."""
    size = tiles.shape[1]
    flipped = tiles[:, ::-1] if vertical else tiles
    flipped = flipped[:, :, ::-1] if horizontal else flipped
    moved = []
    for b in boxes:
        b = b.copy()
        if horizontal:
            b[:, [0, 2]] = size - b[:, [2, 0]]
        if vertical:
            b[:, [1, 3]] = size - b[:, [3, 1]]
        moved.append(b)
    return np.ascontiguousarray(flipped), moved


def matched_scene(scene: Scene, colour_reference: np.ndarray | None) -> Scene:
    """The scene with its colours matched to the reference, as `/detect` matches an upload."""
    if colour_reference is None:
        return scene
    return Scene(scene.name, match_colours(scene.pixels, colour_reference), scene.boxes)


def enlarge_scene(scene: Scene, upscale: float) -> Scene:
    """The scene as the detector sees it when it enlarges its input by `upscale` (see `enlarge`)."""
    pixels = enlarge(scene.pixels, upscale)
    factor = np.array([pixels.shape[1] / scene.pixels.shape[1], pixels.shape[0] / scene.pixels.shape[0]] * 2)
    return Scene(scene.name, pixels, scene.boxes * factor)


def jitter_colours(tiles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each tile with its own random saturation, contrast, brightness and colour balance: other
    forests are lit and coloured differently (bright sand, grey dead crowns), the trees' shape stays."""
    count = len(tiles)
    x = tiles.astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4, (count, 1, 1, 1))
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = mean + (x - mean) * rng.uniform(0.7, 1.3, (count, 1, 1, 1))
    x = x * rng.uniform(0.75, 1.3, (count, 1, 1, 1)) * rng.uniform(0.9, 1.1, (count, 1, 1, 3))
    return x.clip(0, 255).astype(np.uint8)


def training_tiles(scenes: list[Scene], tile: int, overlap: int, flips: bool = True, colour_copies: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every training tile, (with `flips`) its three mirror images, and `colour_copies` recoloured
    copies of all of those (uint8)."""
    rng = np.random.default_rng(seed)
    all_tiles, all_boxes = [], []
    for scene in scenes:
        tiles, boxes = tiles_with_boxes(scene, tile, overlap)
        variants = [(False, False), (True, False), (False, True), (True, True)] if flips else [(False, False)]
        for horizontal, vertical in variants:
            t, b = flip(tiles, boxes, horizontal, vertical)
            all_tiles.extend([t] + [jitter_colours(t, rng) for _ in range(colour_copies)])
            all_boxes.extend(b * (1 + colour_copies))
    return np.concatenate(all_tiles), all_boxes
