"""Pascal VOC XML annotations, read from any folder so users can bring their own data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Annotation:
    """One image's boxes (N, 4) as x1, y1, x2, y2 in pixels, and their class names."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    names: tuple[str, ...]


def read_voc(path: Path) -> Annotation:
    """One VOC XML file; a missing size is 0; a box with xmax <= xmin or ymax <= ymin is an error."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = int(float(size.findtext("width", "0"))) if size is not None else 0
    height = int(float(size.findtext("height", "0"))) if size is not None else 0
    boxes, names = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        x1, y1, x2, y2 = (float(box.findtext(tag, "nan")) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"{path.name}: box {(x1, y1, x2, y2)} has no area")
        boxes.append((x1, y1, x2, y2))
        names.append((obj.findtext("name") or "").strip())
    array = np.asarray(boxes, np.float64).reshape(-1, 4)
    return Annotation(root.findtext("filename", path.stem), width, height, array, tuple(names))


def image_for(xml: Path) -> Path:
    """The image beside an annotation: same stem, any common image suffix."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (xml.with_suffix(suffix), xml.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no image beside {xml} ({', '.join(IMAGE_SUFFIXES)})")


def read_voc_folder(folder: Path) -> dict[str, tuple[Path, Annotation]]:
    """Every annotated image of a folder, by file stem."""
    return {xml.stem: (image_for(xml), read_voc(xml)) for xml in sorted(Path(folder).glob("*.xml"))}
