"""Training pairs: the corpus as word ids on disk, slid over by a context window, streamed by tf.data.

Only one chunk of the corpus is in memory at a time (the ids are a memory-mapped .npy file), so
memory stays flat however long the corpus grows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.words.vocab import Vocabulary

CHUNK_TOKENS = 250_000


@dataclass(frozen=True)
class EncodedCorpus:
    """Word ids of every in-vocabulary token, and the piece (line) each token belongs to."""

    ids: np.ndarray
    piece_ids: np.ndarray

    @classmethod
    def write(cls, pieces: Iterable[list[str]], vocab: Vocabulary, folder: Path) -> EncodedCorpus:
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.lib.format.open_memmap(folder / "ids.part.npy", "w+", np.int32, (vocab.total,))
        piece_ids = np.lib.format.open_memmap(folder / "pieces.part.npy", "w+", np.int32, (vocab.total,))
        index, position = vocab.index, 0
        for number, piece in enumerate(pieces):
            encoded = vocab.encode(piece, index)
            ids[position : position + len(encoded)] = encoded
            piece_ids[position : position + len(encoded)] = number
            position += len(encoded)
        ids.flush(), piece_ids.flush()
        del ids, piece_ids
        (folder / "pieces.part.npy").replace(folder / "pieces.npy")
        (folder / "ids.part.npy").replace(folder / "ids.npy")
        return cls.open(folder)

    @classmethod
    def open(cls, folder: Path) -> EncodedCorpus:
        return cls(np.load(folder / "ids.npy", mmap_mode="r"), np.load(folder / "pieces.npy", mmap_mode="r"))

    @classmethod
    def from_pieces(cls, pieces: Iterable[list[str]], vocab: Vocabulary) -> EncodedCorpus:
        """In memory, for small corpora (tests)."""
        index = vocab.index
        encoded = [vocab.encode(piece, index) for piece in pieces]
        piece_ids = [np.full(len(ids), number, np.int32) for number, ids in enumerate(encoded)]
        return cls(np.concatenate(encoded), np.concatenate(piece_ids))

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int = CHUNK_TOKENS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive slices that end on a piece boundary, so no window is cut by a chunk edge."""
        start = 0
        while start < len(self):
            end = min(start + size, len(self))
            if end < len(self):  # move the end back to the first token of the piece it falls in
                boundary = int(np.searchsorted(self.piece_ids[start:end], self.piece_ids[end], side="left"))
                end = start + boundary if boundary > 0 else end
            yield np.asarray(self.ids[start:end]), np.asarray(self.piece_ids[start:end])
            start = end


def context_mask(piece_ids: np.ndarray, window: int, reduced: np.ndarray | None = None) -> np.ndarray:
    """(n, 2*window) booleans: is the word at each offset (-window..-1, 1..window) from each position
    a context word, i.e. inside the sequence, in the same piece, and within that position's window.

    `reduced` gives each position its own window (1..window), word2vec's way of weighting near
    words more than far ones.
    """
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    positions = np.arange(len(piece_ids))[:, None] + offsets[None, :]
    inside = (positions >= 0) & (positions < len(piece_ids))
    clipped = np.clip(positions, 0, max(len(piece_ids) - 1, 0))
    valid = inside & (piece_ids[clipped] == piece_ids[:, None])
    if reduced is not None:
        valid &= np.abs(offsets)[None, :] <= reduced[:, None]
    return valid


def context_windows(
    ids: np.ndarray, piece_ids: np.ndarray, window: int, pad: int, reduced: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (context, target) pairs of a sequence: (contexts (n, 2*window), targets (n,)).

    Empty context slots hold `pad`; a position with no context word at all is dropped, as word2vec
    drops it. Training uses the same windows in span form (`PairStream`), which is cheaper.
    """
    valid = context_mask(piece_ids, window, reduced)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    clipped = np.clip(np.arange(len(ids))[:, None] + offsets[None, :], 0, max(len(ids) - 1, 0))
    contexts = np.where(valid, ids[clipped], pad).astype(np.int32)
    has_context = valid.any(axis=1)
    return contexts[has_context], ids[has_context].astype(np.int32)


@dataclass(frozen=True)
class PairStream:
    """One epoch of training pairs in span form: each batch is `span` (ids of a run of consecutive
    words with `window` words of margin either side), `mask` (batch, 2*window) saying which offsets
    of each target in the middle are its context words, and `words`, how many corpus tokens the batch
    stands for (before subsampling), which drives the learning-rate decay and the words/sec count.

    A span carries the same (context, target) pairs as `context_windows`, but each word's vector is
    gathered and updated once per batch instead of once per window it appears in.
    """

    corpus: EncodedCorpus
    keep: np.ndarray  # subsampling keep-probability per word id
    window: int
    batch_size: int
    pad: int
    seed: int
    reduce_windows: bool = True  # word2vec's random window per target, 1..window

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.float32]]:
        rng = np.random.default_rng([self.seed, epoch])
        margin = np.full(self.window, self.pad, np.int32)
        for ids, piece_ids in self.corpus.chunks():
            kept = rng.random(len(ids)) < self.keep[ids]
            if not kept.any():
                continue
            reduced = rng.integers(1, self.window + 1, int(kept.sum())) if self.reduce_windows else None
            mask = context_mask(piece_ids[kept], self.window, reduced)
            padded = np.concatenate([margin, ids[kept], margin])
            words_per_target = len(ids) / len(mask)
            for start in range(0, len(mask), self.batch_size):
                stop = min(start + self.batch_size, len(mask))
                yield (padded[start : stop + 2 * self.window], mask[start:stop],
                       np.float32((stop - start) * words_per_target))

    def dataset(self, current_epoch: Callable[[], int]) -> tf.data.Dataset:
        """A tf.data pipeline; each iteration (one `fit` epoch) draws epoch `current_epoch()`."""

        def generate() -> Iterator[tuple[np.ndarray, np.ndarray, np.float32]]:
            yield from self.batches(current_epoch())

        signature = (
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, 2 * self.window), tf.bool),
            tf.TensorSpec((), tf.float32),
        )
        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(4)
