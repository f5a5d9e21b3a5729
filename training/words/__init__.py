"""words: CBOW word embeddings written from scratch, trained on three English texts, served as
cosine neighbours (`/similar-words`, `/analogy`).

    corpus.py   the texts, tokenised once into a cached token stream
    vocab.py    vocabulary, subsampling, noise distribution
    windows.py  context windows, streamed through tf.data
    cbow.py     the network and its SGD updates
    quality.py  WordSim353 and analogy scores
    export.py   serving model, word2vec text, projector files
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from app.config import Settings
from training.evaluation import load_stored, store_evaluation
from training.plots import plot_history
from training.recording import TrainingRun
from training.sources import GENSIM_TEXTS, STATE_OF_THE_UNION, fetch
from training.spec import ModelSpec
from training.words.cbow import CBOW
from training.words.corpus import ANALOGIES, WORDSIM353, corpus_file, corpus_fingerprint, read_pieces
from training.words.export import build_serving_model, stored_vectors, write_projector, write_word2vec_text
from training.words.quality import read_word_pairs, score_vectors, word_similarity
from training.words.vocab import Vocabulary
from training.words.windows import EncodedCorpus, PairStream

NAME = "words"


@dataclass(frozen=True)
class Corpus:
    """The token stream ready to train on: its vocabulary and word ids."""

    vocab: Vocabulary
    encoded: EncodedCorpus

    @classmethod
    def from_pieces(cls, pieces: list[list[str]], min_count: int) -> Corpus:
        """A small corpus held in memory (tests, examples)."""
        vocab = Vocabulary.build(pieces, min_count)
        return cls(vocab, EncodedCorpus.from_pieces(pieces, vocab))


def prepare_corpus(settings: Settings, min_count: int, max_vocab: int | None = None) -> Corpus:
    """Tokenise (once), count, and encode the corpus as word ids (once per vocabulary setting)."""
    path = corpus_file(settings)
    vocab = Vocabulary.build(read_pieces(path), min_count, max_vocab)
    folder = path.parent / f"ids-{corpus_fingerprint()}-min{min_count}-max{max_vocab or 0}"
    encoded = (EncodedCorpus.open(folder) if (folder / "ids.npy").is_file()
               else EncodedCorpus.write(read_pieces(path), vocab, folder))
    return Corpus(vocab, encoded)


def evaluation_files(settings: Settings) -> tuple[Path, Path]:
    folder = fetch(GENSIM_TEXTS, settings.DATA_DIR)
    return folder / WORDSIM353, folder / ANALOGIES


class WordsProgress(keras.callbacks.Callback):
    """Prints words/sec while training, and adds words/sec and WordSim353 to each epoch's row."""

    def __init__(self, model: CBOW, epoch_words: int, vocab: Vocabulary, wordsim: Path | None,
                 every_seconds: float = 5.0, quiet: bool = False):
        super().__init__()
        self.cbow, self.epoch_words, self.vocab, self.every, self.quiet = model, epoch_words, vocab, every_seconds, quiet
        self.pairs = read_word_pairs(wordsim) if wordsim else None
        self.training_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch
        self.started = self.last_print = time.perf_counter()
        self.words_at_start = float(self.cbow.words_done.numpy())

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if self.quiet or now - self.last_print < self.every:
            return
        self.last_print = now
        done = float(self.cbow.words_done.numpy()) - self.words_at_start
        print(f"epoch {self.epoch + 1}: {done / self.epoch_words:6.1%}  {done / (now - self.started):,.0f} words/s"
              f"  loss {float(logs.get('loss', float('nan'))):.4f}", flush=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self.started
        self.training_seconds += seconds
        logs = logs if logs is not None else {}
        logs["words_per_sec"] = self.epoch_words / seconds
        logs["seconds"] = seconds
        if self.pairs is not None:
            logs["wordsim353_spearman"] = word_similarity(self.vocab.words, self.cbow.embeddings(), self.pairs)[
                "wordsim353_spearman"]
        print(f"epoch {epoch + 1} done in {seconds:.1f}s: {logs['words_per_sec']:,.0f} words/s, "
              f"loss {float(logs.get('loss', float('nan'))):.4f}"
              + (f", wordsim353 {logs['wordsim353_spearman']:.3f}" if self.pairs is not None else ""), flush=True)


def build_cbow(corpus: Corpus, args: argparse.Namespace) -> CBOW:
    model = CBOW(
        len(corpus.vocab), args.dim, window=args.window, noise_cdf=corpus.vocab.noise_cdf(),
        total_words=float(corpus.vocab.total) * args.epochs, negative=args.negative,
        full_softmax=args.full_softmax, learning_rate=args.learning_rate,
        min_learning_rate=args.min_learning_rate, seed=args.seed,
    )
    model.compile()
    return model


def train_cbow(corpus: Corpus, args: argparse.Namespace, callbacks: list[keras.callbacks.Callback] | None = None,
               wordsim: Path | None = None) -> tuple[CBOW, float]:
    """Train CBOW on the corpus; returns the model and the training time in seconds (epochs only)."""
    model = build_cbow(corpus, args)
    stream = PairStream(corpus.encoded, corpus.vocab.keep_probabilities(args.sample), args.window,
                        args.batch_size, pad=len(corpus.vocab), seed=args.seed)
    # The epoch to draw comes from the words already trained, so a resumed run draws new windows.
    dataset = stream.dataset(lambda: int(round(float(model.words_done.numpy()) / corpus.vocab.total)))
    progress = WordsProgress(model, corpus.vocab.total, corpus.vocab, wordsim, quiet=args.quiet)
    with warnings.catch_warnings():
        # An epoch is one pass of the generator, whose length varies with subsampling: its end is
        # expected, and the stream is deliberately in corpus order, like word2vec's.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        model.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[progress, *(callbacks or [])])
    return model, progress.training_seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5, help="Context words on each side (at most).")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--max-vocab", type=int, default=None)
    parser.add_argument("--sample", type=float, default=1e-3, help="Subsampling threshold; 0 keeps every word.")
    parser.add_argument("--negative", type=int, default=5, help="Noise words per target.")
    parser.add_argument("--full-softmax", action="store_true", help="Full softmax instead of negative sampling.")
    parser.add_argument("--learning-rate", type=float, default=0.025)
    parser.add_argument("--min-learning-rate", type=float, default=0.0001)
    parser.add_argument("--batch-size", type=int, default=2048, help="Targets per SGD step.")


def train(args: argparse.Namespace, settings: Settings) -> int:
    corpus = prepare_corpus(settings, args.min_count, args.max_vocab)
    return train_on(corpus, args, settings, evaluation_files(settings),
                    dataset=f"{GENSIM_TEXTS.name}+{STATE_OF_THE_UNION.name}", data_fingerprint=corpus_fingerprint())


def train_on(corpus: Corpus, args: argparse.Namespace, settings: Settings, evaluation: tuple[Path, Path], *,
             dataset: str, data_fingerprint: str) -> int:
    """Train on a prepared corpus, score, export, record the run, publish a version."""
    wordsim, analogies = evaluation
    params = {k: v for k, v in vars(args).items() if k not in ("command", "model", "resume")}
    params.update(vocab_size=len(corpus.vocab), corpus_words=corpus.vocab.total)
    print(f"corpus: {corpus.vocab.total:,} words in the vocabulary of {len(corpus.vocab):,} (min count {args.min_count})")
    with TrainingRun(NAME, settings, params=params, seed=args.seed, dataset=dataset,
                     data_fingerprint=data_fingerprint, resume=args.resume) as run:
        model, _ = train_cbow(corpus, args, run.callbacks(), wordsim)
        vectors = model.embeddings()
        history = run.history()
        training_seconds = sum(r["seconds"] for r in history)  # every session's epochs, resumed ones too
        metrics = {**score_vectors(corpus.vocab.words, vectors, wordsim, analogies),
                   "vocab_size": len(corpus.vocab), "corpus_words": corpus.vocab.total,
                   "words_per_sec": corpus.vocab.total * len(history) / training_seconds,
                   "training_seconds": training_seconds}
        exports = run.workdir / "exports"
        write_projector(corpus.vocab.words, vectors, exports)
        write_word2vec_text(corpus.vocab.words, vectors, exports / "words.w2v.txt")
        print(f"exports: {exports}/words.w2v.txt, vectors.tsv, metadata.tsv")
        plot_history(history, run.plots_dir / "loss.png", title="words: CBOW loss per epoch")
        plot_history(history, run.plots_dir / "wordsim353.png", metric="wordsim353_spearman",
                     title="words: WordSim353 Spearman per epoch")
        return run.publish(
            build_serving_model(vectors), task="embedding", input_shape=[args.dim], labels=corpus.vocab.words,
            test_metrics=metrics,
            preprocessing={"kind": "words", "tokenizer": "lowercase letters, inner apostrophes kept"},
            description=f"CBOW word embeddings ({args.dim} dimensions, window {args.window}, "
                        f"{'full softmax' if args.full_softmax else f'{args.negative} negative samples'}), "
                        "written from scratch; the layer scores a query vector against every unit word vector.",
            extra={"exports": f"DATA_DIR/{exports.relative_to(settings.DATA_DIR)}"},
        )


def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    model, manifest = load_stored(settings, NAME, version)
    wordsim, analogies = evaluation_files(settings)
    metrics = {"model": NAME, "version": manifest.version,
               **score_vectors(manifest.labels, stored_vectors(model), wordsim, analogies)}
    store_evaluation(settings, manifest, metrics)
    return metrics


SPEC = ModelSpec(
    name=NAME,
    summary="CBOW word embeddings written from scratch (negative sampling or full softmax, SGD).",
    sources=(GENSIM_TEXTS, STATE_OF_THE_UNION),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
