"""The words model: tokenizer, vocabulary, windows, CBOW updates, exports, and the two endpoints."""

from __future__ import annotations

import argparse
import difflib
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.api import spellings
from app.api.spellings import SpellingIndex
from app.api.words import word_ids
from app.config import REPO_ROOT
from app.errors import NotFound
from app.main import create_app
from app.preprocessing.words import combining_marks, tokenize
from tests.conftest import make_settings
from training.words import Corpus, train_cbow, train_on
from training.words.cbow import CBOW
from training.words.corpus import pieces
from training.words.export import build_serving_model, stored_vectors, write_projector, write_word2vec_text
from training.words.quality import analogy_accuracy, unit_rows, word_similarity
from training.words.vocab import Vocabulary
from training.words.windows import EncodedCorpus, PairStream, context_mask, context_windows

PAD = 99
PLANTED = [("cat", "dog"), ("car", "truck"), ("apple", "banana")]
TEMPLATES = ["the {} chased a mouse across the yard", "i drove my {} to work every morning",
             "she ate an {} for lunch with tea"]


def planted_pieces(count: int = 120, seed: int = 0) -> list[list[str]]:
    """Sentences in which the two words of each planted pair always appear in the same contexts."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(count):
        sentences = []
        for _ in range(8):
            group = rng.integers(len(TEMPLATES))
            sentences.append(TEMPLATES[group].format(PLANTED[group][rng.integers(2)]))
        result.append(tokenize(" ".join(sentences)))
    return result


def tiny_args(**overrides) -> argparse.Namespace:
    values = dict(epochs=6, dim=16, window=2, min_count=1, max_vocab=None, sample=0.0, negative=5,
                  full_softmax=False, learning_rate=0.05, min_learning_rate=0.0001, batch_size=256,
                  seed=3, resume=False, quiet=True)
    return argparse.Namespace(**{**values, **overrides})


# --- data preparation --------------------------------------------------------------------------

def test_tokenizer_lowercases_and_keeps_only_words():
    assert tokenize("Don't STOP: 3 cats, 4th café-au-lait!\nO'Brien") == [
        "don't", "stop", "cats", "th", "café", "au", "lait", "o'brien"]
    assert tokenize("  42 -- !! ") == []


def test_tokenizer_keeps_a_dotted_capital_and_a_decomposed_accent_inside_their_words():
    assert tokenize("İSTANBUL İstanbul cafe\u0301") == ["istanbul", "istanbul", "café"]


def test_tokenizer_reads_a_curly_apostrophe_as_the_ascii_one():
    assert tokenize("Don\u2019t don\u02bct \u2018quoted\u2019 O\u2019Brien") == ["don't", "don't", "quoted", "o'brien"]


@pytest.mark.parametrize("word", ["हिन्दी", "كَتَبَ", "שָׁלוֹם", "q\u0301", "a\U0001d167b", "x\U000e0100"])
def test_tokenizer_keeps_combining_marks_inside_their_words(word):
    """Devanagari vowel signs, Arabic and Hebrew points, a mark with no composed form, marks beyond the BMP."""
    assert tokenize(f"{word} 7{word}") == [word, word]


def test_combining_marks_lie_in_the_planes_the_tokenizer_scans():
    assert combining_marks(tuple(range(17))) == combining_marks((0, 1, 14))


def test_documents_are_cut_into_pieces_gensim_will_not_truncate():
    assert [len(p) for p in pieces(list("abcdefg"), size=3)] == [3, 3, 1]


def test_vocabulary_orders_by_count_and_drops_rare_words():
    vocab = Vocabulary.build([["b", "a", "b", "c"], ["b", "a", "d"]], min_count=2)
    assert vocab.words == ["b", "a"] and vocab.counts.tolist() == [3, 2]
    assert vocab.total == 5
    assert vocab.encode(["a", "x", "b", "c"]).tolist() == [1, 0]
    assert Vocabulary.build([["b", "a", "b"]], min_count=1, max_size=1).words == ["b"]


def test_subsampling_keeps_rare_words_and_thins_frequent_ones_like_word2vec():
    vocab = Vocabulary(["the", "rare"], np.array([990, 10]))
    keep = vocab.keep_probabilities(0.01)  # threshold: 10 of the 1000 words
    assert keep[1] == 1.0
    assert keep[0] == pytest.approx((np.sqrt(990 / 10) + 1) * 10 / 990)
    assert vocab.keep_probabilities(0).tolist() == [1.0, 1.0]
    share = 990**0.75 / (990**0.75 + 10**0.75)
    np.testing.assert_allclose(vocab.noise_cdf(), [share, 1.0])


def test_context_windows_on_an_exact_example():
    ids = np.array([10, 11, 12, 13, 20, 21])
    piece_ids = np.array([0, 0, 0, 0, 1, 1])  # windows never cross into another piece
    contexts, targets = context_windows(ids, piece_ids, window=2, pad=PAD)
    assert targets.tolist() == [10, 11, 12, 13, 20, 21]
    assert contexts.tolist() == [
        [PAD, PAD, 11, 12], [PAD, 10, 12, 13], [10, 11, 13, PAD], [11, 12, PAD, PAD],
        [PAD, PAD, 21, PAD], [PAD, 20, PAD, PAD],
    ]


def test_reduced_windows_and_positions_without_context():
    ids, piece_ids = np.array([10, 11, 12, 30]), np.array([0, 0, 0, 1])
    contexts, targets = context_windows(ids, piece_ids, window=2, pad=PAD, reduced=np.array([1, 2, 1, 2]))
    assert targets.tolist() == [10, 11, 12]  # 30 is alone in its piece: no pair, as in word2vec
    assert contexts.tolist() == [[PAD, PAD, 11, PAD], [PAD, 10, 12, PAD], [PAD, 11, PAD, PAD]]
    assert context_mask(piece_ids, 1).tolist() == [[False, True], [True, True], [True, False], [False, False]]


def test_chunks_end_on_piece_boundaries():
    corpus = EncodedCorpus(np.arange(10, dtype=np.int32), np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2]))
    assert [chunk.tolist() for chunk, _ in corpus.chunks(size=5)] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def test_spans_hold_the_same_pairs_as_the_windows():
    """Training reads windows as shifted slices of a span; that must equal the plain pairs' mean."""
    corpus = Corpus.from_pieces(planted_pieces(4), min_count=1)
    vocab, window = corpus.vocab, 2
    model = CBOW(len(vocab), 8, window=window, noise_cdf=np.linspace(0.1, 1, len(vocab)), total_words=1e4)
    stream = PairStream(corpus.encoded, np.ones(len(vocab), np.float32), window, 37, pad=len(vocab), seed=0,
                        reduce_windows=False)
    contexts, targets = context_windows(corpus.encoded.ids, corpus.encoded.piece_ids, window, pad=len(vocab))
    spans = list(stream.batches(0))
    span_targets = np.concatenate([span[window:-window] for span, _, _ in spans])
    assert span_targets.tolist() == targets.tolist()
    from_spans = np.concatenate([
        model.span_mean(tf.gather(model.input_vectors.value, span), tf.cast(mask, tf.float32)).numpy()
        for span, mask, _ in spans])
    from_pairs = model.context_mean(tf.constant(contexts))[0].numpy()
    np.testing.assert_allclose(from_spans, from_pairs, atol=1e-6)
    assert sum(float(words) for *_, words in spans) == pytest.approx(len(corpus.encoded))


# --- the model -----------------------------------------------------------------------------------

def test_full_softmax_update_is_the_gradient_of_the_cross_entropy():
    """The hand-written update of the output vectors is -rate x the autodiff gradient."""
    vocab_size, dim, window = 12, 4, 1
    model = CBOW(vocab_size, dim, window=window, noise_cdf=np.linspace(0.1, 1, vocab_size), total_words=1e9,
                 full_softmax=True, learning_rate=0.5, min_learning_rate=0.5, seed=1)
    model.output_vectors.assign(np.random.default_rng(0).normal(size=(vocab_size, dim)).astype(np.float32))
    span = tf.constant([3, 5, 7, 2, 9], tf.int32)
    mask = tf.constant([[True, True], [True, True], [True, True]])
    before_out = tf.identity(model.output_vectors.value)
    hidden = model.span_mean(tf.gather(model.input_vectors.value, span), tf.cast(mask, tf.float32))
    with tf.GradientTape() as tape:
        tape.watch(before_out)
        logits = tf.matmul(hidden, before_out, transpose_b=True)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(span[1:4], logits))
    gradient = tape.gradient(loss, before_out)
    model.train_step((span, mask, tf.constant(3.0)))
    np.testing.assert_allclose(model.output_vectors.numpy() - before_out.numpy(), -0.5 * gradient.numpy(), atol=1e-5)


def test_planted_words_end_up_nearest_each_other():
    corpus = Corpus.from_pieces(planted_pieces(), min_count=1)
    model, seconds = train_cbow(corpus, tiny_args())
    unit = unit_rows(model.embeddings())
    index = corpus.vocab.index
    for first, second in PLANTED:
        for word, partner in ((first, second), (second, first)):
            similarities = unit @ unit[index[word]]
            similarities[index[word]] = -np.inf
            assert corpus.vocab.words[int(similarities.argmax())] == partner
    assert seconds < 30


def test_full_softmax_option_trains_too():
    corpus = Corpus.from_pieces(planted_pieces(60), min_count=1)
    model, _ = train_cbow(corpus, tiny_args(full_softmax=True, epochs=4))
    unit, index = unit_rows(model.embeddings()), corpus.vocab.index
    assert unit[index["cat"]] @ unit[index["dog"]] > unit[index["cat"]] @ unit[index["truck"]]


def test_quality_scores_on_known_vectors():
    words = ["a", "b", "c", "d", "e"]
    vectors = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [-1, -1]], dtype=np.float32)
    similarity = word_similarity(words, vectors, [("a", "c", 9.0), ("a", "b", 1.0), ("a", "e", 0.0), ("a", "zz", 5.0)])
    assert similarity == {"wordsim353_spearman": pytest.approx(1.0), "wordsim353_pairs": 3, "wordsim353_oov_pairs": 1}
    analogies = analogy_accuracy(words, vectors, [("a", "c", "b", "d"), ("c", "a", "d", "b"), ("a", "b", "c", "zz")])
    assert analogies == {"analogy_accuracy": 1.0, "analogy_questions": 2, "analogy_skipped": 1}


# --- exports ---------------------------------------------------------------------------------------

def test_word2vec_text_is_read_back_by_gensim(tmp_path):
    from gensim.models import KeyedVectors

    words = ["king", "queen", "don't", "café"]
    vectors = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    loaded = KeyedVectors.load_word2vec_format(str(write_word2vec_text(words, vectors, tmp_path / "w.txt")))
    assert loaded.index_to_key == words
    np.testing.assert_allclose(loaded.vectors, vectors, atol=1e-6)


def test_projector_files_and_serving_model_round_trip(tmp_path):
    words = ["king", "queen", "man"]
    vectors = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    tsv, metadata = write_projector(words, vectors, tmp_path)
    np.testing.assert_allclose(np.loadtxt(tsv, delimiter="\t"), vectors, atol=1e-6)
    assert metadata.read_text().splitlines() == words
    model = build_serving_model(vectors)
    np.testing.assert_allclose(stored_vectors(model), unit_rows(vectors), atol=1e-6)
    cosines = model(unit_rows(vectors)[:1]).numpy()[0]
    np.testing.assert_allclose(cosines, unit_rows(vectors) @ unit_rows(vectors)[0], atol=1e-6)


# --- the endpoints -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def words_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("words")
    settings = make_settings(root)
    wordsim, analogies = root / "wordsim.tsv", root / "analogies.txt"
    wordsim.write_text("# comment\ncat\tdog\t9.0\ncat\tcar\t1.0\ncar\ttruck\t8.0\napple\tcar\t0.5\n")
    analogies.write_text(": planted\ncat dog car truck\n")
    corpus = Corpus.from_pieces(planted_pieces(), min_count=1)
    train_on(corpus, tiny_args(), settings, (wordsim, analogies), dataset="planted", data_fingerprint="test")
    with TestClient(create_app(settings)) as client:
        yield client


def vocabulary_vectors(client) -> tuple[list[str], np.ndarray]:
    loaded = client.app.state.store.get("words")
    return loaded.manifest.labels, unit_rows(stored_vectors(loaded.compiled.model))


def test_similar_words_are_the_nearest_by_cosine(words_client):
    response = words_client.get("/similar-words", params={"word": "Cat", "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "words" and body["version"] == 1 and body["word"] == "cat"
    neighbours = body["neighbours"]
    assert len(neighbours) == 4 and neighbours[0]["word"] == "dog"
    assert "cat" not in [n["word"] for n in neighbours]
    words, unit = vocabulary_vectors(words_client)
    expected = unit @ unit[words.index("cat")]
    for entry in neighbours:
        assert entry["score"] == pytest.approx(expected[words.index(entry["word"])], abs=1e-5)
    assert [n["score"] for n in neighbours] == sorted((n["score"] for n in neighbours), reverse=True)
    expected[words.index("cat")] = -np.inf  # the graph's top-k gives the same words a full sort does
    assert [n["word"] for n in neighbours] == [words[i] for i in np.argsort(-expected, kind="stable")[:4]]


def test_a_word_asked_again_is_answered_without_running_the_model(words_client, monkeypatch):
    first = words_client.get("/similar-words", params={"word": "dog", "k": 5}).json()["neighbours"]
    loaded = words_client.app.state.store.get("words")
    calls = []
    original = loaded.infer

    async def counting_infer(*args, **kwargs):
        calls.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(loaded, "infer", counting_infer)
    again = words_client.get("/similar-words", params={"word": "dog", "k": 5}).json()["neighbours"]
    assert calls == [] and again == first  # the model is not run again for the same question
    fewer = words_client.get("/similar-words", params={"word": "dog", "k": 2}).json()["neighbours"]
    assert len(calls) == 1 and fewer == first[:2]
    words_client.get("/analogy", params={"positive": ["dog"]})  # any other query still runs the model
    assert len(calls) == 2


def test_analogy_is_vector_arithmetic(words_client):
    response = words_client.get("/analogy", params={"positive": ["dog", "car"], "negative": ["cat"], "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["positive"] == ["dog", "car"] and body["negative"] == ["cat"]
    words, unit = vocabulary_vectors(words_client)
    query = unit[words.index("dog")] + unit[words.index("car")] - unit[words.index("cat")]
    scores = unit @ (query / np.linalg.norm(query))
    for word in ("dog", "car", "cat"):
        scores[words.index(word)] = -np.inf
    assert [a["word"] for a in body["answers"]] == [words[i] for i in np.argsort(-scores)[:3]]
    assert body["answers"][0]["score"] == pytest.approx(scores.max(), abs=1e-5)


def test_a_words_version_has_its_lookups_built_as_it_loads(words_client, monkeypatch):
    """The spelling index (15-40 ms for the shipped 16,401 words) was built on the event loop by the
    first request for an unknown word; now the loading thread builds every lookup."""
    loaded = words_client.app.state.store.get("words")
    assert set(loaded.derived) >= {"positions", "spellings", "unit_vectors"}
    assert loaded.derived["unit_vectors"].shape == (len(loaded.manifest.labels), loaded.derived["unit_vectors"].shape[1])
    monkeypatch.setattr("app.api.words.SpellingIndex", lambda words: pytest.fail("built again on a request"))
    assert words_client.get("/similar-words", params={"word": "dgo"}).status_code == 404


def test_unknown_word_is_a_404_with_close_spellings(words_client):
    response = words_client.get("/similar-words", params={"word": "dgo"})
    assert response.status_code == 404
    assert "'dgo' is not in the vocabulary" in response.json()["detail"] and "dog" in response.json()["detail"]
    response = words_client.get("/analogy", params={"positive": ["cat", "zzzzqq"]})
    assert response.status_code == 404 and "'zzzzqq'" in response.json()["detail"]
    assert "close spellings" not in response.json()["detail"]


def test_a_curly_apostrophe_or_a_combining_mark_is_read_inside_the_word(words_client):
    response = words_client.get("/similar-words", params={"word": "can\u2019t"})  # was "2 words (can t)"
    assert response.status_code == 404 and "'can't' is not in the vocabulary" in response.json()["detail"]
    response = words_client.get("/similar-words", params={"word": "cat\u0301"})  # was read as "cat"
    assert response.status_code == 404, response.text
    assert "'cat\u0301' is not in the vocabulary" in response.json()["detail"] and "cat" in response.json()["detail"]


@pytest.mark.parametrize("path, params, reason", [
    ("/similar-words", {"word": ""}, "word"),
    ("/similar-words", {"word": "!!"}, "holds no word"),
    ("/similar-words", {"word": "two words"}, "give one word"),
    ("/similar-words", {"word": "cat", "k": 0}, "k"),
    ("/similar-words", {"word": "cat", "k": 101}, "query.k: Input should be less than or equal to 100 (the MAX_K setting)"),
    ("/analogy", {"positive": ["cat"], "k": 101, "version": "x"}, "query.k: Input should be less than or equal to 100"),
    ("/similar-words", {}, "word"),
    ("/analogy", {}, "positive"),
    ("/analogy", {"positive": ["cat"] * 11}, "at most 10"),
    ("/analogy", {"positive": ["cat"], "negative": ["cat"]}, "cancel out"),
    ("/analogy", {"positive": ["cat", "x" * 65]}, "query.positive.1: String should have at most 64 characters"),
    ("/analogy", {"positive": ["cat"], "negative": [""]}, "query.negative.0: String should have at least 1 character"),
])
def test_bad_queries_are_422_naming_the_problem(words_client, path, params, reason):
    response = words_client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert reason in response.text


def test_words_model_is_listed_as_an_embedding(words_client):
    body = words_client.get("/models").json()
    words = next(m for m in body["data"] if m["name"] == "words")
    assert words["task"] == "embedding" and words["input_spec"]["shape"] == [16]
    assert words["test_metrics"]["wordsim353_pairs"] == 4 and words["test_metrics"]["analogy_questions"] == 1
    assert words_client.get("/similar-words", params={"word": "cat", "model": "nope"}).status_code == 404


# --- close spellings -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_vocabulary() -> list[str]:
    manifest = REPO_ROOT / "models" / "words" / "1" / "manifest.json"
    if not manifest.is_file():
        pytest.skip("no shipped words model")
    return json.loads(manifest.read_text())["labels"]


def misspellings(vocabulary: list[str], count: int, seed: int) -> list[str]:
    """Vocabulary words with one or two letters inserted, dropped or replaced, and random letters;
    none of them in the vocabulary."""
    rng = random.Random(seed)
    words = []
    for _ in range(count):
        word = list(rng.choice(vocabulary))
        for _ in range(rng.randint(1, 2)):
            at, letter, edit = rng.randrange(len(word)), rng.choice("abcdefghijklmnopqrstuvwxyzé'"), rng.randrange(3)
            if edit == 0 or len(word) == 1:
                word.insert(at, letter)
            elif edit == 1:
                del word[at]
            else:
                word[at] = letter
        words.append("".join(word))
        words.append("".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(1, 14))))
    known = set(vocabulary)
    return [word for word in words if word not in known]


def test_close_spellings_are_difflibs(shipped_vocabulary):
    index = SpellingIndex(shipped_vocabulary)
    assert index.close_to("fraance") == ["france", "france's", "forbearance", "francs", "franco"]  # README
    for word in [*misspellings(shipped_vocabulary, 150, seed=0), "", "q\u0301", "हिन्दी", "e" * 64, "e" * 65, "x" * 500]:
        assert index.close_to(word) == difflib.get_close_matches(word, shipped_vocabulary, n=5, cutoff=0.6), word


def test_close_spellings_in_a_large_alphabet_need_memory_for_the_letters_only():
    """The letter table was dense, every letter by every word: a review measured 438 MB and 1.6 s
    for a vocabulary of 3,000 distinct characters. Sparse, it holds one entry per distinct letter of
    each word."""
    rng = np.random.default_rng(0)
    vocabulary = sorted({"".join(chr(0x4E00 + c) for c in rng.integers(0, 3000, rng.integers(1, 5)))
                         for _ in range(20_000)})
    index = SpellingIndex(vocabulary)
    assert len(index.letter_words) == sum(len(set(word)) for word in vocabulary)
    assert index.letter_starts[-1] == len(index.letter_words) and index.alphabet_size > 2_900
    for word in [vocabulary[7][:-1] + "\u4e01", vocabulary[99] + vocabulary[100][:1], "\u9fff\u4e00"]:
        assert index.close_to(word) == difflib.get_close_matches(word, vocabulary, n=5, cutoff=0.6), word


def test_an_unknown_word_is_compared_exactly_with_a_few_words_only(shipped_vocabulary, monkeypatch):
    """difflib compared every one of the 16,401 words (30-100 ms per unknown word, on the event loop:
    30 clients asking for misspelt words kept /health waiting for seconds); the index's bounds
    leave a handful to compare exactly."""
    loaded = SimpleNamespace(manifest=SimpleNamespace(labels=shipped_vocabulary), derived={})
    compared = []
    ratio = difflib.SequenceMatcher.ratio
    monkeypatch.setattr(difflib.SequenceMatcher, "ratio", lambda self: compared.append(1) or ratio(self))
    with pytest.raises(NotFound, match="close spellings: france, france's, forbearance, francs, franco"):
        word_ids(loaded, ["fraance"])
    words = misspellings(shipped_vocabulary, 100, seed=1)
    for word in words:
        with pytest.raises(NotFound):
            word_ids(loaded, [word])
    assert len(compared) / (len(words) + 1) < 30


def test_close_spellings_are_kept_for_the_words_asked_last(monkeypatch):
    index = SpellingIndex(["cat", "dog", "car"])
    searched = []
    search = index.search
    monkeypatch.setattr(index, "search", lambda word: searched.append(word) or search(word))
    monkeypatch.setattr(spellings, "KEPT_WORDS", 2)
    for word in ["cta", "dgo", "cta", "crr", "cta", "dgo"]:  # "dgo" is dropped when "crr" comes
        index.close_to(word)
    assert searched == ["cta", "dgo", "crr", "dgo"]
    assert index.close_to("cta") == ["cat", "car"] and list(index.kept) == ["dgo", "cta"]
