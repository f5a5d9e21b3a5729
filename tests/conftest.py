"""Shared fixtures: settings in a temporary folder, a tiny trained digits model, a client."""

from __future__ import annotations

import argparse
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

TEMPLATE_SEED = 7


def make_settings(root, **overrides) -> Settings:
    values = {"MODEL_DIR": root / "models", "DATA_DIR": root / "data", "DEVICE": "cpu"}
    return Settings(**{**values, **overrides})


def synthetic_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten fixed random stroke templates, one per class, with noise: learnable in seconds."""
    templates = np.random.default_rng(TEMPLATE_SEED).random((10, 28, 28)) > 0.8
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = templates[labels].astype(np.float32) * 0.9 + rng.random((count, 28, 28)).astype(np.float32) * 0.1
    return images, labels


def train_args(**overrides) -> argparse.Namespace:
    values = dict(epochs=2, batch_size=32, hidden_units=32, dropout=0.0, learning_rate=0.1,
                  momentum=0.9, max_shift=0, limit=None, seed=1, resume=False, quiet=True)
    return argparse.Namespace(**{**values, **overrides})


def train_tiny_digits(settings: Settings, **overrides) -> int:
    from training.digits import train_on

    data = {"train": synthetic_digits(300, 1), "validation": synthetic_digits(60, 2), "test": synthetic_digits(100, 3)}
    return train_on(data, train_args(**overrides), settings, dataset="synthetic", data_fingerprint="test")


@pytest.fixture(scope="session")
def trained_settings(tmp_path_factory) -> Settings:
    """A store holding one tiny digits model, trained once for the whole session."""
    settings = make_settings(tmp_path_factory.mktemp("trained"))
    train_tiny_digits(settings)
    return settings


@pytest.fixture(scope="session")
def client(trained_settings) -> TestClient:
    with TestClient(create_app(trained_settings)) as test_client:
        yield test_client


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def template_image(label: int) -> bytes:
    """A synthetic 'digit' of class `label` as a PNG, light ink on black like the training data."""
    templates = np.random.default_rng(TEMPLATE_SEED).random((10, 28, 28)) > 0.8
    return png_bytes((templates[label] * 255).astype(np.uint8))
