"""How good word vectors are: WordSim353 (Spearman correlation with human similarity judgements) and
the word2vec analogy questions ("athens greece baghdad ?" -> "iraq").

Both work on any (words, vectors) pair, so CBOW and gensim are scored by the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ANALOGY_BATCH = 1024


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def read_word_pairs(path: Path) -> list[tuple[str, str, float]]:
    """WordSim353 as gensim ships it: tab-separated word, word, mean human score; '#' comments."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            first, second, score = line.split("\t")[:3]
            pairs.append((first.lower(), second.lower(), float(score)))
    return pairs


def read_analogies(path: Path) -> list[tuple[str, str, str, str]]:
    """questions-words.txt: ': section' headers, then 'a b c d' lines meaning a:b :: c:d."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(":"):
            a, b, c, d = line.lower().split()
            questions.append((a, b, c, d))
    return questions


def word_similarity(words: list[str], vectors: np.ndarray, pairs: list[tuple[str, str, float]]) -> dict:
    """Spearman correlation between cosine similarity and the human scores, over the pairs whose
    two words are both in the vocabulary; the others are counted, not guessed."""
    index = {word: i for i, word in enumerate(words)}
    known = [(index[a], index[b], score) for a, b, score in pairs if a in index and b in index]
    unit = unit_rows(vectors)
    cosines = [float(unit[a] @ unit[b]) for a, b, _ in known]
    from scipy.stats import spearmanr  # the `words` extra; imported here so other models need not have it

    correlation = spearmanr(cosines, [score for *_, score in known]).statistic if len(known) > 2 else float("nan")
    return {"wordsim353_spearman": float(correlation), "wordsim353_pairs": len(known),
            "wordsim353_oov_pairs": len(pairs) - len(known)}


def analogy_accuracy(words: list[str], vectors: np.ndarray, questions: list[tuple[str, str, str, str]]) -> dict:
    """a:b :: c:? answered by the word nearest (cosine) to b - a + c among all but a, b and c.

    Questions with a word outside the vocabulary are skipped and counted (as gensim does).
    """
    index = {word: i for i, word in enumerate(words)}
    known = np.array([[index[w] for w in q] for q in questions if all(w in index for w in q)], dtype=np.int64)
    unit = unit_rows(vectors)
    correct = 0
    for start in range(0, len(known), ANALOGY_BATCH):
        batch = known[start : start + ANALOGY_BATCH]
        queries = unit[batch[:, 1]] - unit[batch[:, 0]] + unit[batch[:, 2]]
        scores = queries @ unit.T
        rows = np.arange(len(batch))[:, None]
        scores[rows, batch[:, :3]] = -np.inf
        correct += int((scores.argmax(axis=1) == batch[:, 3]).sum())
    return {"analogy_accuracy": correct / len(known) if len(known) else float("nan"),
            "analogy_questions": int(len(known)), "analogy_skipped": len(questions) - int(len(known))}


def score_vectors(words: list[str], vectors: np.ndarray, wordsim_path: Path, analogies_path: Path) -> dict:
    return {**word_similarity(words, vectors, read_word_pairs(wordsim_path)),
            **analogy_accuracy(words, vectors, read_analogies(analogies_path))}
