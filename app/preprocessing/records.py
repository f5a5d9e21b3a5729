"""Numeric records (ECG beats) prepared and scored the same way by training and by the service.

A record model's manifest holds `preprocessing = {"kind": "standardise", "mean": m, "std": s}`,
constants fitted on the training data; the service applies them to records exactly as clients
send them (as stored in the dataset), and the reconstruction error is measured in that
standardised space, which is where the threshold was chosen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STANDARDISE = "standardise"


def fit_standardisation(records: np.ndarray) -> dict[str, Any]:
    """The constants `normalise_records` needs: one mean and one spread over every value of `records`.

    One pair of scalars (not one per time step) keeps the beat's shape as it is: the autoencoder
    sees the same curve, only shifted and scaled.
    """
    values = np.asarray(records, dtype=np.float64)
    return {"kind": STANDARDISE, "mean": float(values.mean()), "std": float(values.std())}


def normalise_records(records: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """Raw records (batch, length) → model input: (record - mean) / std, float32."""
    if preprocessing.get("kind") != STANDARDISE:
        raise ValueError(f"unknown record preprocessing {preprocessing.get('kind')!r}")
    mean, std = preprocessing["mean"], preprocessing["std"]
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf; the scorer refuses its record
        return ((np.asarray(records, dtype=np.float64) - mean) / std).astype(np.float32)


def denormalise_records(values: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """Model output back in the units of the raw records (the inverse of `normalise_records`)."""
    return np.asarray(values, dtype=np.float64) * preprocessing["std"] + preprocessing["mean"]


def reconstruction_errors(inputs: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Mean squared error of each record against its reconstruction (both normalised)."""
    difference = np.asarray(inputs, dtype=np.float64) - np.asarray(reconstructions, dtype=np.float64)
    return np.mean(difference**2, axis=1)
