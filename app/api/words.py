"""GET /similar-words and GET /analogy: nearest words by cosine, answered by a words model in the store.

The served model is one Dense layer whose kernel holds the unit word vectors (one column per word,
in the order of the manifest's labels): a query vector in, the cosine with every word out, in one
matrix product through `loaded.infer`. A word's query vector is its column of that kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import keras
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from app.api.deps import serving
from app.api.query import (
    ModelQuery,
    WholeNumber,
    at_most_setting,
    documented,
    model_field,
    read_query,
    setting_bound,
)
from app.api.schemas import ERROR_RESPONSES, json_response
from app.api.spellings import SpellingIndex
from app.errors import BadInput, NotFound
from app.preprocessing.words import tokenize
from app.serving.kept import keep
from app.store.store import LoadedModel, ModelStore

router = APIRouter(prefix="", tags=["words"], responses=ERROR_RESPONSES)

COSINE_LAYER = "cosine"  # the layer training names; its kernel is (dim, vocab)
MAX_WORD_CHARS = 64
KEPT_ANSWERS = 10_000  # rendered /similar-words answers kept per loaded version


class WordScore(BaseModel):
    word: str
    score: float  # cosine similarity, -1..1


class SimilarWords(BaseModel):
    model: str
    version: int
    word: str
    neighbours: list[WordScore]


class AnalogyAnswer(BaseModel):
    model: str
    version: int
    positive: list[str]
    negative: list[str]
    answers: list[WordScore]


def words_model(store: ModelStore, model: str, version: int | None) -> LoadedModel:
    return store.get(model, version, task="embedding")


def read_word(text: str, field: str) -> str:
    """A query word read like the corpus was: lowercased, one word of letters."""
    tokens = tokenize(text)
    if not tokens:
        raise BadInput(f"{field} '{text}' holds no word (letters) to look up")
    if len(tokens) > 1:
        raise BadInput(f"{field} '{text}' is {len(tokens)} words ({' '.join(tokens)}); give one word")
    return tokens[0]


def derived(loaded: LoadedModel, key: str, build: Callable[[], Any]) -> Any:
    """`loaded.derived[key]`, built once per loaded version: by `build_lookups` as the version loads,
    or here on first use for a version loaded without it."""
    value = loaded.derived.get(key)
    if value is None:
        value = loaded.derived[key] = build()
    return value


def build_lookups(loaded: LoadedModel) -> None:
    """A words version's lookups, built while it loads (in the loading thread, not on the event
    loop): its words' positions, its spelling index (15-40 ms for 16,401 words) and unit vectors."""
    if loaded.manifest.task == "embedding":
        word_positions(loaded)
        spelling_index(loaded)
        word_vectors(loaded, [])


def word_positions(loaded: LoadedModel) -> dict[str, int]:
    """Vocabulary positions by word: a list's .index() would be a scan per request."""
    return derived(loaded, "positions", lambda: {word: i for i, word in enumerate(loaded.manifest.labels)})


def spelling_index(loaded: LoadedModel) -> SpellingIndex:
    return derived(loaded, "spellings", lambda: SpellingIndex(loaded.manifest.labels))


def word_ids(loaded: LoadedModel, words: list[str]) -> list[int]:
    """Vocabulary positions; an unknown word is a 404 that offers close spellings."""
    positions = word_positions(loaded)
    ids = []
    for word in words:
        if word not in positions:
            close = close_spellings(loaded, word)
            hint = f"; close spellings: {', '.join(close)}" if close else ""
            raise NotFound(f"'{word}' is not in the vocabulary ({len(loaded.manifest.labels):,} words){hint}")
        ids.append(positions[word])
    return ids


def close_spellings(loaded: LoadedModel, word: str) -> list[str]:
    """Vocabulary words spelt like `word`, in well under a millisecond of the event loop's time.

    difflib over the whole vocabulary took 30-100 ms per unknown word, which 30 clients asking
    for misspelt words turned into seconds of delay for every other request, /health's too."""
    return spelling_index(loaded).close_to(word)


def word_vectors(loaded: LoadedModel, ids: list[int]) -> np.ndarray:
    """The unit vectors of these words, (len(ids), dim): columns of the cosine layer's kernel."""
    def unit_vectors() -> np.ndarray:  # (vocabulary, dim), rows are words
        kernel = loaded.compiled.model.get_layer(COSINE_LAYER).kernel
        return np.ascontiguousarray(keras.ops.convert_to_numpy(kernel).T)

    return derived(loaded, "unit_vectors", unit_vectors)[np.asarray(ids, dtype=np.intp)]


def words_to_return(k: int, vocabulary: list[str], excluded: int) -> int:
    """`k`, or fewer when the vocabulary without the query's own words is smaller (`k` itself is at
    most MAX_K, checked with the query)."""
    return min(k, len(vocabulary) - excluded)


def top_words(ranked: tuple[np.ndarray, np.ndarray], vocabulary: list[str], exclude: list[int], k: int
              ) -> list[WordScore]:
    """The k best words, best first, leaving out the query's own words.

    `ranked` is one query's (scores, word ids), best first, as the served graph ranks them
    (`embedding_top_k` words: at least k plus the excluded ones)."""
    scores, ids = ranked
    best: list[WordScore] = []
    for word_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if word_id not in exclude:
            best.append(WordScore(word=vocabulary[word_id], score=round(score, 6)))
            if len(best) == k:
                break
    return best


async def ranked(loaded: LoadedModel, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The served graph's ranking for one unit query vector (dim,): (scores, word ids), best first."""
    scores, ids = await loaded.infer(query[None, :])
    return scores[0], ids[0]


def kept_answers(loaded: LoadedModel) -> dict[tuple[int, int], bytes]:
    """This version's rendered /similar-words answers, by (word id, k), oldest first."""
    return loaded.derived.setdefault("similar_words_answers", {})


async def similar_words_answer(loaded: LoadedModel, model: str, word: str, word_id: int, k: int) -> bytes:
    """The rendered answer for a vocabulary word, computed on its first request and then kept.

    A version's vectors never change, so neither does a word's answer: asked again, it costs a
    dictionary lookup instead of a pass over the whole vocabulary and a rendering. At most
    `KEPT_ANSWERS` answers are kept per version (about 0.5 KB each at k=10); the oldest goes first."""
    kept = kept_answers(loaded)
    body = kept.get((word_id, k))
    if body is None:
        scores_and_ids = await ranked(loaded, word_vectors(loaded, [word_id])[0])
        neighbours = top_words(scores_and_ids, loaded.manifest.labels, [word_id], k)
        answer = SimilarWords(model=model, version=loaded.version, word=word, neighbours=neighbours)
        body = keep(kept, (word_id, k), answer.model_dump_json().encode(), KEPT_ANSWERS)
    return body


class WordsQuery(ModelQuery):
    model: str = model_field("words", "A word-embedding model in /models.")


class SimilarQuery(WordsQuery):
    word: str = Field(min_length=1, max_length=MAX_WORD_CHARS, description="One word.")
    k: Annotated[WholeNumber, at_most_setting("MAX_K")] = Field(10, ge=1, description="How many words to return (at most MAX_K).")


# One word of an analogy, bounded as /similar-words' `word` is.
AnalogyWord = Annotated[str, StringConstraints(min_length=1, max_length=MAX_WORD_CHARS)]


class AnalogyQuery(WordsQuery):
    positive: list[AnalogyWord] = Field(min_length=1, json_schema_extra=setting_bound("maxItems", "MAX_ANALOGY_TERMS"),
                                        description="Words to add (repeat the parameter); at most MAX_ANALOGY_TERMS "
                                                    "positive and negative words in all.")
    negative: list[AnalogyWord] = Field([], json_schema_extra=setting_bound("maxItems", "MAX_ANALOGY_TERMS"),
                                        description="Words to subtract (repeat the parameter).")
    k: Annotated[WholeNumber, at_most_setting("MAX_K")] = Field(5, ge=1, description="How many words to return (at most MAX_K).")


@router.get("/similar-words", response_model=SimilarWords, openapi_extra=documented(SimilarQuery))
async def read_similar_words(request: Request) -> Response:
    """The k words nearest to a word by cosine similarity, best first."""
    store, _ = serving(request)
    query = read_query(request, SimilarQuery)
    model, k = query.model, query.k
    loaded = words_model(store, model, query.version)
    word = read_word(query.word, "word")
    top_k = words_to_return(k, loaded.manifest.labels, 1)
    ids = word_ids(loaded, [word])
    body = await similar_words_answer(loaded, model, word, ids[0], top_k)
    return Response(body, media_type="application/json")


@router.get("/analogy", response_model=AnalogyAnswer, openapi_extra=documented(AnalogyQuery))
async def read_analogy(request: Request) -> Response:
    """The words nearest to the sum of the positive words minus the negative ones (king - man + woman)."""
    store, settings = serving(request)
    query = read_query(request, AnalogyQuery)
    model, positive, negative = query.model, query.positive, query.negative
    terms = len(positive) + len(negative)
    if terms > settings.MAX_ANALOGY_TERMS:
        raise BadInput(f"{terms} words given; an analogy takes at most {settings.MAX_ANALOGY_TERMS}")
    loaded = words_model(store, model, query.version)
    vocabulary = loaded.manifest.labels
    plus = [read_word(w, "positive") for w in positive]
    minus = [read_word(w, "negative") for w in negative]
    top_k = words_to_return(query.k, vocabulary, len(set(plus + minus)))
    plus_ids, minus_ids = word_ids(loaded, plus), word_ids(loaded, minus)
    vectors = word_vectors(loaded, plus_ids + minus_ids)
    direction = vectors[: len(plus_ids)].sum(axis=0) - vectors[len(plus_ids) :].sum(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-6:
        raise BadInput("the positive and negative words cancel out: there is nothing left to look up")
    answers = top_words(await ranked(loaded, direction / norm), vocabulary, plus_ids + minus_ids, top_k)
    return json_response(AnalogyAnswer(model=model, version=loaded.version, positive=plus, negative=minus,
                                       answers=answers))
