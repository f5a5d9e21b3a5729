"""The vocabulary: words kept by a minimum count, their frequencies, and what word2vec derives from them.

Word ids are assigned by descending count (ties by first appearance), as word2vec and gensim do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NEGATIVE_POWER = 0.75  # word2vec's smoothing of the noise distribution


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]
    counts: np.ndarray  # int64, one per word, same order

    @classmethod
    def build(cls, pieces: Iterable[list[str]], min_count: int, max_size: int | None = None) -> Vocabulary:
        counter: Counter[str] = Counter()
        for piece in pieces:
            counter.update(piece)
        kept = [(word, count) for word, count in counter.most_common() if count >= min_count]
        if max_size is not None:
            kept = kept[:max_size]
        return cls([word for word, _ in kept], np.array([count for _, count in kept], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    @property
    def total(self) -> int:
        """Tokens of the corpus that are in the vocabulary: the words one epoch trains on."""
        return int(self.counts.sum())

    def encode(self, tokens: list[str], index: dict[str, int] | None = None) -> np.ndarray:
        """Ids of the tokens in the vocabulary; the others are dropped, as word2vec does."""
        index = index or self.index
        return np.array([index[t] for t in tokens if t in index], dtype=np.int32)

    def keep_probabilities(self, sample: float) -> np.ndarray:
        """word2vec's subsampling: a word of frequency f is kept with (sqrt(f/s) + 1) * s/f, at most 1.

        `sample` <= 0 keeps every word. Same formula as gensim, so both sides drop the same share.
        """
        if sample <= 0:
            return np.ones(len(self), dtype=np.float32)
        threshold = sample * self.total
        probabilities = (np.sqrt(self.counts / threshold) + 1) * threshold / self.counts
        return np.minimum(probabilities, 1.0).astype(np.float32)

    def noise_cdf(self) -> np.ndarray:
        """Cumulative count^0.75 distribution over word ids: a uniform draw in [0, 1) searched in it
        is a noise word, as word2vec draws from its unigram table (without the 100M-entry table)."""
        weights = self.counts.astype(np.float64) ** NEGATIVE_POWER
        return np.cumsum(weights) / weights.sum()
