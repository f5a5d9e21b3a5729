"""Close spellings of a word outside a vocabulary: difflib's suggestions, without comparing every word."""

from __future__ import annotations

import difflib
import heapq

import numpy as np

from app.serving.kept import keep

SUGGESTIONS = 5
CUTOFF = 0.6  # difflib.get_close_matches' default similarity
MAX_COMPARED = 200  # exact comparisons per word: a typo needs 6 (at most ~60), a crafted word stops here
KEPT_WORDS = 4_096  # answers kept per vocabulary, least recently asked dropped first
MASK_BITS = 64  # the longest word whose common subsequences are counted in one uint64 per vocabulary word


class SpellingIndex:
    """A vocabulary's letters laid out as arrays, once, so that a word's close spellings cost < 1 ms.

    `close_to(word)` answers what `difflib.get_close_matches(word, words, n=5, cutoff=0.6)` answers
    (unless more than MAX_COMPARED words pass the bounds: never for the shipped vocabulary, whose
    queries leave at most about 25), which runs a SequenceMatcher over every word: 30-100 ms of CPU for 16,401 words. Its similarity
    is 2M / (both lengths), M the letters in the matching blocks. M is at most the length of the two
    words' longest common subsequence, itself at most the number of letters they share; numpy
    computes both bounds for the whole vocabulary at once. Only words whose bound reaches the cutoff
    are compared exactly, highest bound first, until no bound left can beat the fifth best."""

    def __init__(self, words: list[str]):
        self.words = words
        codes = np.array(words).view(np.uint32).reshape(len(words), -1)  # (words, longest); 0 pads
        alphabet = np.union1d(codes, [0])  # every letter's code point, and 0
        letters = np.searchsorted(alphabet, codes)  # each letter as its place in `alphabet`
        self.alphabet_size = len(alphabet)
        self.letter_index = {chr(code): place for place, code in enumerate(alphabet.tolist()) if code}
        # (longest, words): the n-th letter of every word, one row per n
        self.columns = np.ascontiguousarray(letters.T.astype(np.min_scalar_type(len(alphabet))))
        self.letter_starts, self.letter_words, self.letter_counts = letter_postings(letters, len(alphabet))
        self.lengths = (codes != 0).sum(axis=1)
        self.longest = int(self.lengths.max())
        self.kept: dict[str, list[str]] = {}

    def close_to(self, word: str) -> list[str]:
        """Up to five vocabulary words spelt like `word`, closest first; kept, since typos recur."""
        if 2 * self.longest / (len(word) + self.longest) < CUTOFF:
            return []  # too long to resemble any word (which also bounds the length of kept words)
        found = self.kept.pop(word, None)  # re-inserted by `keep`: the dictionary's order is the order of use
        return keep(self.kept, word, self.search(word) if found is None else found, KEPT_WORDS)

    def search(self, word: str) -> list[str]:
        """Close spellings by difflib's ratio, compared only where the bounds let them reach the cutoff."""
        totals = self.lengths + len(word)
        bounds = 2.0 * self.shared_letters(word) / totals
        rows = np.flatnonzero(bounds >= CUTOFF)
        bounds = bounds[rows]
        if len(word) <= MASK_BITS:  # the tighter bound
            bounds = 2.0 * self.common_subsequence(word, rows) / totals[rows]
            rows, bounds = rows[bounds >= CUTOFF], bounds[bounds >= CUTOFF]
        order = np.argsort(-bounds, kind="stable")[:MAX_COMPARED]
        return best_matches(word, [self.words[i] for i in rows[order].tolist()], bounds[order].tolist())

    def shared_letters(self, word: str) -> np.ndarray:
        """How many letters (with repeats) each vocabulary word has in common with `word`."""
        wanted: dict[int, int] = {}
        for letter in word:
            if letter in self.letter_index:
                place = self.letter_index[letter]
                wanted[place] = wanted.get(place, 0) + 1
        shared = np.zeros(len(self.words), np.int64)
        for place, count in wanted.items():  # a word appears once in a letter's postings: no repeated index
            start, stop = self.letter_starts[place], self.letter_starts[place + 1]
            shared[self.letter_words[start:stop]] += np.minimum(self.letter_counts[start:stop], min(count, self.longest))
        return shared

    def common_subsequence(self, word: str, rows: np.ndarray) -> np.ndarray:
        """The longest common subsequence of `word` (at most 64 letters) with each of these words.

        Bit-parallel (Allison and Dix; Hyyrö): one bit per letter of `word`, one uint64 per
        vocabulary word, one step per letter position for all the words at once."""
        positions = np.zeros(self.alphabet_size, np.uint64)  # per letter: its bits in `word`
        for i, letter in enumerate(word):
            if letter in self.letter_index:
                positions[self.letter_index[letter]] |= np.uint64(1 << i)
        state = np.full(len(rows), np.uint64(2**64 - 1))
        for column in self.columns[:, rows]:
            matched = state & positions[column]
            state = (state + matched) | (state - matched)
        return np.bitwise_count(~state & np.uint64((1 << len(word)) - 1))


def letter_postings(letters: np.ndarray, alphabet_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each letter, the words holding it and how often, given (words, longest) letter places.

    Letter by letter, as (starts, words, counts): letter p's words are words[starts[p]:starts[p+1]].
    Sparse, so its size is the vocabulary's letters whatever the alphabet: a table of every letter
    by every word held 3,000 × words counts for a vocabulary of Chinese characters."""
    words, longest = letters.shape
    places = (np.arange(words)[:, None] + letters * words)[letters != 0]  # letter-major; 0 pads
    pairs, counts = np.unique(places, return_counts=True)
    starts = np.searchsorted(pairs // words, np.arange(alphabet_size + 1))
    return starts, (pairs % words).astype(np.min_scalar_type(words)), counts.astype(np.min_scalar_type(longest))


def best_matches(word: str, candidates: list[str], bounds: list[float]) -> list[str]:
    """The five candidates most similar to `word` by difflib's ratio, given upper bounds, highest first.

    Ties go to the later word in alphabetical order, as in `difflib.get_close_matches`."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)  # as get_close_matches: the word is the second sequence
    best: list[tuple[float, str]] = []  # a heap of the best (ratio, candidate), worst on top
    for candidate, bound in zip(candidates, bounds, strict=True):
        if len(best) == SUGGESTIONS and bound < best[0][0]:
            break  # no candidate left can beat the fifth best
        matcher.set_seq1(candidate)
        ratio = matcher.ratio()
        if ratio >= CUTOFF:
            (heapq.heappush if len(best) < SUGGESTIONS else heapq.heappushpop)(best, (ratio, candidate))
    return [candidate for _, candidate in sorted(best, reverse=True)]
