"""Continuous bag of words, written out: average the context vectors, score against output vectors,
and update both with the gradients of the log loss by plain SGD, as word2vec does.

The forward pass (`call`) is the lab's model: the mean of the context words' embeddings, then a
softmax over the whole vocabulary. Training either computes that full softmax (`full_softmax=True`)
or, by default, word2vec's negative sampling: the target word against `negative` noise words drawn
from count^0.75, a logistic loss per pair. The gradients are written by hand (they are two lines)
so each step updates only the rows a batch touches, with word2vec's learning rate that falls
linearly from `learning_rate` to `min_learning_rate` over all the words of all epochs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class CBOW(keras.Model):
    """Two matrices: input vectors (the embeddings we keep; an extra last row is the zero padding
    of short contexts) and output vectors (what a context is scored against)."""

    def __init__(
        self, vocab_size: int, dim: int, *, window: int, noise_cdf: np.ndarray, total_words: float, negative: int = 5,
        full_softmax: bool = False, learning_rate: float = 0.025, min_learning_rate: float = 0.0001,
        seed: int = 0, **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.pad, self.window = vocab_size, dim, vocab_size, window
        self.offsets = [*range(-window, 0), *range(1, window + 1)]  # the columns of a context mask
        self.negative, self.full_softmax = negative, full_softmax
        self.learning_rate, self.min_learning_rate = learning_rate, min_learning_rate
        self.total_words = float(total_words)
        self.noise_cdf = tf.constant(noise_cdf, tf.float32)
        self.seed_generator = keras.random.SeedGenerator(seed)
        rng = np.random.default_rng(seed)
        # word2vec's initialisation: small uniform input vectors, zero output vectors.
        start = (rng.random((vocab_size + 1, dim), dtype=np.float32) - 0.5) / dim
        start[self.pad] = 0.0
        self.input_vectors = self.add_weight(shape=(vocab_size + 1, dim), initializer="zeros",
                                             trainable=False, name="input_vectors")
        self.input_vectors.assign(start)
        self.output_vectors = self.add_weight(shape=(vocab_size, dim), initializer="zeros",
                                              trainable=False, name="output_vectors")
        self.words_done = self.add_weight(shape=(), initializer="zeros", dtype="float64",
                                          trainable=False, name="words_done")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def context_mean(self, contexts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The hidden layer: mean of the context embeddings (padding excluded), and the padding mask."""
        mask = tf.cast(tf.not_equal(contexts, self.pad), tf.float32)
        summed = tf.reduce_sum(tf.gather(self.input_vectors.value, contexts), axis=1)
        return summed / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0), mask

    def call(self, contexts: tf.Tensor) -> tf.Tensor:
        """P(target | context) over the whole vocabulary."""
        hidden, _ = self.context_mean(contexts)
        return tf.nn.softmax(tf.matmul(hidden, self.output_vectors.value, transpose_b=True))

    def current_learning_rate(self) -> tf.Tensor:
        progress = tf.cast(self.words_done.value, tf.float32) / self.total_words
        rate = self.learning_rate - (self.learning_rate - self.min_learning_rate) * progress
        return tf.maximum(rate, self.min_learning_rate)

    def draw_negatives(self, targets: tf.Tensor) -> tf.Tensor:
        shape = (tf.shape(targets)[0], self.negative)
        uniform = keras.random.uniform((1, shape[0] * shape[1]), seed=self.seed_generator)
        drawn = tf.searchsorted(self.noise_cdf[None, :], uniform, side="right", out_type=tf.int32)
        return tf.reshape(tf.minimum(drawn, self.vocab_size - 1), shape)

    def negative_sampling_step(self, hidden: tf.Tensor, targets: tf.Tensor, rate: tf.Tensor, counted: tf.Tensor):
        """Logistic loss of the target (label 1) and the noise words (label 0); returns the loss,
        the error to pass back to the hidden layer, and updates the output vectors it touched."""
        negatives = self.draw_negatives(targets)
        columns = tf.concat([targets[:, None], negatives], axis=1)  # (batch, 1 + negative)
        outputs = tf.gather(self.output_vectors.value, columns)  # (batch, 1 + negative, dim)
        logits = tf.reduce_sum(hidden[:, None, :] * outputs, axis=2)
        labels = tf.concat([tf.ones_like(logits[:, :1]), tf.zeros_like(logits[:, 1:])], axis=1)
        # word2vec skips a noise word that happens to be the target.
        # A target without any context word is skipped (`counted` is 0 for it).
        weights = tf.concat([labels[:, :1], tf.cast(tf.not_equal(negatives, targets[:, None]), tf.float32)], 1)
        weights *= counted[:, None]
        loss = tf.reduce_sum(weights * tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=1)
        error = rate * weights * (labels - tf.sigmoid(logits))  # minus the gradient, times the rate
        hidden_error = tf.einsum("bk,bkd->bd", error, outputs)
        updates = error[:, :, None] * hidden[:, None, :]
        self.output_vectors.value.scatter_add(
            tf.IndexedSlices(tf.reshape(updates, (-1, self.dim)), tf.reshape(columns, (-1,))))
        return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(counted), 1.0), hidden_error

    def full_softmax_step(self, hidden: tf.Tensor, targets: tf.Tensor, rate: tf.Tensor, counted: tf.Tensor):
        """Cross-entropy of the softmax over the whole vocabulary; every output vector moves."""
        logits = tf.matmul(hidden, self.output_vectors.value, transpose_b=True)
        loss = counted * tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        error = rate * counted[:, None] * (tf.one_hot(targets, self.vocab_size) - tf.nn.softmax(logits))
        hidden_error = tf.matmul(error, self.output_vectors.value)
        self.output_vectors.value.assign_add(tf.matmul(error, hidden, transpose_a=True))
        return tf.reduce_sum(loss) / tf.maximum(tf.reduce_sum(counted), 1.0), hidden_error

    def span_mean(self, vectors: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """The hidden layer for the targets in the middle of a span: the mean of each target's
        context vectors, read as shifted slices of the span's vectors (see `PairStream`)."""
        size = tf.shape(mask)[0]
        summed = tf.add_n([mask[:, i : i + 1] * vectors[self.window + offset : self.window + offset + size]
                           for i, offset in enumerate(self.offsets)])
        return summed / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)

    def span_error(self, hidden_error: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Back through `span_mean`: each span word receives the hidden error of every target it is
        a context word of (whole, not divided by the context size: word2vec's cbow_mean=1 rule)."""
        return tf.add_n([tf.pad(mask[:, i : i + 1] * hidden_error,
                                [[self.window + offset, self.window - offset], [0, 0]])
                         for i, offset in enumerate(self.offsets)])

    def train_step(self, data):
        span, mask, words = data
        mask = tf.cast(mask, tf.float32)
        rate = self.current_learning_rate()
        vectors = tf.gather(self.input_vectors.value, span)
        hidden = self.span_mean(vectors, mask)
        targets = span[self.window : self.window + tf.shape(mask)[0]]
        has_context = tf.cast(tf.reduce_any(mask > 0, axis=1), tf.float32)
        step = self.full_softmax_step if self.full_softmax else self.negative_sampling_step
        loss, hidden_error = step(hidden, targets, rate, has_context)
        self.input_vectors.value.scatter_add(tf.IndexedSlices(self.span_error(hidden_error, mask), span))
        self.words_done.assign_add(tf.cast(words, tf.float64))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "learning_rate": rate}

    def embeddings(self) -> np.ndarray:
        """The learned word vectors (the input vectors without the padding row)."""
        return np.asarray(self.input_vectors.numpy()[: self.vocab_size])
