"""What every implementation shares, so they differ only in framework code: the network's sizes and
hyperparameters (those of training/digits.py), one set of initial weights, the order of the batches
and the learning rate at each step. Framework-free: numpy only."""

from __future__ import annotations

import math

import numpy as np

PIXELS = 28 * 28
HIDDEN_UNITS = 1024
CLASSES = 10
DROPOUT = 0.3
BATCH_SIZE = 128
LEARNING_RATE = 0.05
MOMENTUM = 0.9  # Nesterov, as in training/digits.py
FINAL_LR_FRACTION = 0.01  # cosine decay ends at 1% of the start, like keras.optimizers.schedules.CosineDecay(alpha=0.01)


def initial_weights(seed: int) -> dict[str, np.ndarray]:
    """Glorot-uniform kernels and zero biases (Keras's defaults), given to every framework alike,
    so differences in accuracy come from the frameworks and not from their initialisers."""
    rng = np.random.default_rng(seed)

    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

    return {
        "w1": glorot(PIXELS, HIDDEN_UNITS), "b1": np.zeros(HIDDEN_UNITS, np.float32),
        "w2": glorot(HIDDEN_UNITS, CLASSES), "b2": np.zeros(CLASSES, np.float32),
    }


def batch_order(count: int, epoch: int, seed: int) -> list[np.ndarray]:
    """Index arrays, one per batch: a fresh shuffle each epoch, the same for every framework."""
    order = np.random.default_rng(seed * 1_000 + epoch).permutation(count)
    return [order[start:start + BATCH_SIZE] for start in range(0, count, BATCH_SIZE)]


def learning_rate(step: int, total_steps: int) -> float:
    """Cosine decay from LEARNING_RATE to FINAL_LR_FRACTION of it over the whole run."""
    progress = min(step, total_steps) / max(total_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return LEARNING_RATE * ((1.0 - FINAL_LR_FRACTION) * cosine + FINAL_LR_FRACTION)
