"""Run a Keras model through one compiled function with a fixed signature and a dynamic batch.

`model.predict` costs ~48 ms of set-up per call here; a traced `tf.function` called directly costs
well under a millisecond, so every request goes through `CompiledModel`. It calls the traced
graph's concrete function, skipping `tf.function`'s per-call dispatch (about a third of the CPU
time of a call on a small model, measured here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def run_in_pieces(run: Callable[[np.ndarray], Any], batch: np.ndarray, max_rows: int | None) -> Any:
    """`run(batch)`, or `run` on pieces of at most `max_rows` rows with the outputs joined back in
    order (arrays, or a list/tuple/dict of them), so a large batch's memory stays bounded."""
    if not max_rows or len(batch) <= max_rows:
        return run(batch)
    pieces = [run(batch[start:start + max_rows]) for start in range(0, len(batch), max_rows)]
    return tf.nest.map_structure(lambda *rows: np.concatenate(rows), *pieces)


class CompiledModel:
    """A Keras model behind a `tf.function` with input signature `(None, *input_shape)`."""

    def __init__(self, model: keras.Model, input_shape: list[int], dtype: str, device: str, top_k: int | None = None,
                 max_rows: int | None = None):
        """With `top_k`, the graph answers (values, indices) of each row's `top_k` largest outputs,
        best first, instead of every output: a score for each of thousands of words is ranked in
        TensorFlow's C++ kernels, not in Python on the event loop. With `max_rows`, a larger batch
        runs in pieces of that many rows, so its memory stays bounded (a detector's hundreds of tiles)."""
        self.model = model
        self.max_rows = max_rows
        self.device = device
        self.input_shape = tuple(input_shape)
        self.dtype = dtype
        spec = tf.TensorSpec(shape=(None, *self.input_shape), dtype=tf.as_dtype(dtype))

        def run(x: tf.Tensor) -> Any:
            outputs = model(x, training=False)
            return outputs if top_k is None else tuple(tf.math.top_k(outputs, top_k))

        function = tf.function(run, input_signature=[spec])
        with tf.device(device):  # placement is fixed when the graph is traced
            self._call = function.get_concrete_function()

    def warm_up(self) -> None:
        """Trace once at load time so the first request is as fast as the rest."""
        self(np.zeros((1, *self.input_shape), dtype=self.dtype))

    def __call__(self, batch: np.ndarray) -> Any:
        """Run one batch; returns numpy arrays in the structure the model outputs."""
        return run_in_pieces(self._run, batch, self.max_rows)

    def _run(self, batch: np.ndarray) -> Any:
        outputs = self._call(tf.constant(batch, dtype=self.dtype))
        if isinstance(outputs, tf.Tensor):
            return outputs.numpy()
        return tf.nest.map_structure(lambda t: t.numpy(), outputs)
