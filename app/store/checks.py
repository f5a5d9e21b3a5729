"""What a version's manifest must agree with before the version is served.

A manifest edited by hand or written by another tool can disagree with its network: labels that do
not match the outputs, an anomaly threshold that is not a positive number, a detector without its
tiling fields. Served, such a version would fail every request (a 500, or a 4xx blaming the
caller); refused when it loads, it is listed in /models with the reason and the others keep serving.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras

from app.detection.views import view_count
from app.preprocessing import check_preparation
from app.preprocessing.records import STANDARDISE
from app.store.manifest import Manifest

DETECTION_FIELDS = ("tile", "overlap", "stride", "score_threshold", "nms_iou")


def outputs_per_row(model: keras.Model) -> tuple[int, ...]:
    shape = model.output_shape
    if isinstance(shape, list):  # one output expected: a list holds several
        raise ValueError(f"the network has {len(shape)} outputs; one is expected")
    return tuple(shape[1:])


def check_labels(manifest: Manifest, model: keras.Model, what: str) -> None:
    """One label (class, word) per output of the network."""
    outputs = outputs_per_row(model)
    if outputs != (len(manifest.labels),):
        raise ValueError(f"the manifest names {len(manifest.labels)} {what} but the network outputs {outputs}")


def check_classifier(manifest: Manifest, model: keras.Model) -> None:
    check_labels(manifest, model, "labels")
    check_preparation(manifest.preprocessing, manifest.input_spec.shape)


def finite_number(value: Any, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, not {value!r}")
    return float(value)


def check_anomaly_model(manifest: Manifest, model: keras.Model) -> None:
    outputs = outputs_per_row(model)
    if outputs != tuple(manifest.input_spec.shape):
        raise ValueError(f"an autoencoder must output its input's shape {tuple(manifest.input_spec.shape)}, "
                         f"not {outputs}")
    finite_number((manifest.model_extra or {}).get("threshold"), "the manifest's threshold", positive=True)
    preprocessing = manifest.preprocessing
    if preprocessing.get("kind") != STANDARDISE:
        raise ValueError(f"record preprocessing must be {{'kind': '{STANDARDISE}', ...}}, not {preprocessing}")
    finite_number(preprocessing.get("std"), "the preprocessing's std", positive=True)
    finite_number(preprocessing.get("mean"), "the preprocessing's mean")


def check_embedding(manifest: Manifest, model: keras.Model) -> None:
    check_labels(manifest, model, "words")


def check_detector(manifest: Manifest, model: keras.Model) -> None:
    fields = (manifest.model_extra or {}).get("detection")
    if not isinstance(fields, dict):
        raise ValueError("a detector's manifest needs its 'detection' fields")
    missing = [name for name in DETECTION_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"the manifest's 'detection' lacks {', '.join(missing)}")
    view_count(fields)  # flip_views must be 1, 2 or 4


CHECKS: dict[str, Callable[[Manifest, keras.Model], None]] = {
    "classify": check_classifier,
    "anomaly": check_anomaly_model,
    "embedding": check_embedding,
    "detect": check_detector,
}


def check_version(manifest: Manifest, model: keras.Model) -> None:
    """Raise ValueError naming the first way `manifest` and `model` disagree."""
    CHECKS[manifest.task](manifest, model)
