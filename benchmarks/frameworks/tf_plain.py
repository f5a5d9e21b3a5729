"""TensorFlow without Keras: variables, a GradientTape, a hand-written update, and tf.function to
trace the Python step into a graph once."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from benchmarks.frameworks.common import DROPOUT, MOMENTUM

IMAGES = tf.TensorSpec([None, 28, 28], tf.float32)
LABELS = tf.TensorSpec([None], tf.int64)


class Net:
    def __init__(self, weights: dict[str, np.ndarray], seed: int) -> None:
        tf.random.set_seed(seed)
        self.params = [tf.Variable(weights[name]) for name in ("w1", "b1", "w2", "b2")]
        self.velocity = [tf.Variable(tf.zeros_like(p)) for p in self.params]
        self.lr = tf.Variable(0.0)

    def logits(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        w1, b1, w2, b2 = self.params
        hidden = tf.nn.relu(tf.reshape(x, [-1, 28 * 28]) @ w1 + b1)
        if training:
            hidden = tf.nn.dropout(hidden, rate=DROPOUT)
        return hidden @ w2 + b2

    @tf.function(input_signature=[IMAGES, LABELS])
    def _train(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, self.logits(x, True)))
        for param, velocity, grad in zip(self.params, self.velocity, tape.gradient(loss, self.params), strict=True):
            velocity.assign(MOMENTUM * velocity - self.lr * grad)  # Nesterov momentum, as Keras's SGD
            param.assign_add(MOMENTUM * velocity - self.lr * grad)
        return loss

    @tf.function(input_signature=[IMAGES])
    def _predict(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self.logits(x, False))

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.lr.assign(lr)
        return float(self._train(x, y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x).numpy()
