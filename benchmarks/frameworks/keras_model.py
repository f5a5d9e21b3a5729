"""Keras 3: layers, a compiled loss and optimizer; the same file runs on TensorFlow, JAX or PyTorch,
whichever KERAS_BACKEND names when keras is first imported."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from benchmarks.frameworks.common import CLASSES, DROPOUT, HIDDEN_UNITS, MOMENTUM


class Net:
    def __init__(self, weights: dict[str, np.ndarray], seed: int) -> None:
        self.model = keras.Sequential([
            keras.Input(shape=(28, 28)),
            layers.Flatten(),
            layers.Dense(HIDDEN_UNITS, activation="relu"),
            layers.Dropout(DROPOUT, seed=seed),  # a layer seed: keras.utils.set_random_seed would import TensorFlow
            layers.Dense(CLASSES, activation="softmax"),
        ])
        self.model.set_weights([weights["w1"], weights["b1"], weights["w2"], weights["b2"]])
        self.model.compile(
            optimizer=keras.optimizers.SGD(momentum=MOMENTUM, nesterov=True),
            loss="sparse_categorical_crossentropy",
        )

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.model.optimizer.learning_rate = lr  # assigns the optimizer's variable: no retracing
        return float(self.model.train_on_batch(x, y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.model.predict_on_batch(x))
