"""What leaves training: the serving model, and the vectors in word2vec text and TensorBoard projector form."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from app.api.words import COSINE_LAYER
from training.words.quality import unit_rows


def build_serving_model(vectors: np.ndarray) -> keras.Sequential:
    """Query vectors (batch, dim) -> cosine with every word (batch, vocab), in one matrix product.

    The Dense kernel is the unit-normalised embedding matrix, transposed; a row of it (a column of
    the kernel) is also the query vector of a word. Built-in layers only, so the service loads it
    with `safe_mode=True`.
    """
    unit = unit_rows(vectors)
    model = keras.Sequential(
        [keras.Input(shape=(unit.shape[1],)), layers.Dense(unit.shape[0], use_bias=False, name=COSINE_LAYER)],
        name="words",
    )
    model.get_layer(COSINE_LAYER).kernel.assign(unit.T)
    return model


def stored_vectors(model: keras.Model) -> np.ndarray:
    """The unit word vectors (vocab, dim) back out of a serving model."""
    return np.asarray(model.get_layer(COSINE_LAYER).kernel.numpy()).T


def write_word2vec_text(words: list[str], vectors: np.ndarray, path: Path) -> Path:
    """The word2vec text format: 'count dim', then one 'word v1 v2 ...' line per word."""
    with path.open("w", encoding="utf-8") as out:
        out.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors, strict=True):
            out.write(word + " " + " ".join(f"{value:.6f}" for value in row) + "\n")
    return path


def write_projector(words: list[str], vectors: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """vectors.tsv and metadata.tsv for projector.tensorflow.org or TensorBoard's projector."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "vectors.tsv", vectors, delimiter="\t", fmt="%.6f")
    (folder / "metadata.tsv").write_text("".join(f"{word}\n" for word in words), encoding="utf-8")
    return folder / "vectors.tsv", folder / "metadata.tsv"
