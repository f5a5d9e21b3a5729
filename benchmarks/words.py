"""CBOW (ours) side by side with gensim's Word2Vec(sg=0) on exactly the same token stream.

    python -m benchmarks.words                    # 3 seeds each side, writes docs/words.md
    python -m benchmarks.words --seeds 1 --epochs 2 --output /tmp/words.md   # a quick look

Both sides read the cached token stream of `training.words.corpus`, with the same dimension,
window, minimum count, subsampling, negative samples, learning rate and epochs, and are scored by
the same code (`training.words.quality`). Each training runs in its own process, so its peak
memory (max RSS) is its own; sides alternate seed by seed, so a change in the machine's load
falls on both. Words/sec = epochs x in-vocabulary corpus words / training seconds, on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.config import REPO_ROOT, get_settings
from benchmarks.machine import cpu_model

SIDES = ("gensim", "cbow")
METRICS = [("wordsim353_spearman", "WordSim353 Spearman", "{:.3f}"), ("analogy_accuracy", "Analogy accuracy", "{:.3f}"),
           ("words_per_sec", "Training words/sec", "{:,.0f}"), ("training_seconds", "Training wall time (s)", "{:.1f}"),
           ("peak_rss_mb", "Peak memory, max RSS (MB)", "{:,.0f}")]


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"dim": 100, "window": 5, "min_count": 5, "negative": 5, "sample": 1e-3, "learning_rate": 0.025,
            "min_learning_rate": 0.0001, "epochs": args.epochs}


def train_gensim(seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    from training.words import evaluation_files, prepare_corpus
    from training.words.corpus import corpus_file
    from training.words.quality import score_vectors

    app_settings = get_settings()
    corpus = prepare_corpus(app_settings, settings["min_count"])
    path = corpus_file(app_settings)
    model = Word2Vec(vector_size=settings["dim"], window=settings["window"], min_count=settings["min_count"],
                     sg=0, cbow_mean=1, negative=settings["negative"], sample=settings["sample"],
                     alpha=settings["learning_rate"], min_alpha=settings["min_learning_rate"], workers=2, seed=seed)
    model.build_vocab(LineSentence(str(path)))
    assert len(model.wv) == len(corpus.vocab), "gensim and CBOW must share the vocabulary"
    started = time.perf_counter()
    model.train(LineSentence(str(path)), total_examples=model.corpus_count, epochs=settings["epochs"])
    seconds = time.perf_counter() - started
    return {**score_vectors(model.wv.index_to_key, model.wv.vectors, *evaluation_files(app_settings)),
            "training_seconds": seconds, "words_per_sec": corpus.vocab.total * settings["epochs"] / seconds}


def train_ours(seed: int, settings: dict[str, Any], batch_size: int) -> dict[str, Any]:
    from training.words import evaluation_files, prepare_corpus, train_cbow
    from training.words.quality import score_vectors

    app_settings = get_settings()
    corpus = prepare_corpus(app_settings, settings["min_count"])
    args = argparse.Namespace(**settings, full_softmax=False, batch_size=batch_size, seed=seed, quiet=True)
    model, seconds = train_cbow(corpus, args)
    return {**score_vectors(corpus.vocab.words, model.embeddings(), *evaluation_files(app_settings)),
            "training_seconds": seconds, "words_per_sec": corpus.vocab.total * settings["epochs"] / seconds}


def run_one(side: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one side in a child process; its JSON result plus its own peak memory."""
    command = [sys.executable, "-m", "benchmarks.words", "--one", side, "--seed", str(seed),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{side} seed {seed} failed (exit {child.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "side": side, "seed": seed, "peak_rss_mb": usage.ru_maxrss / 1024}


def machine() -> str:
    model = cpu_model()
    import gensim
    import tensorflow as tf

    return (f"{os.cpu_count()}-core {platform.machine()} CPU ({model}), no GPU, {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"gensim {gensim.__version__}. The 2 cores were shared with other jobs during the run "
            f"(load average {os.getloadavg()[0]:.1f} at the end).")


def summary_table(results: list[dict[str, Any]]) -> str:
    lines = ["| | " + " | ".join(f"{side} (mean ± sd)" for side in SIDES) + " | CBOW / gensim |",
             "|---|" + "---|" * (len(SIDES) + 1)]
    for key, title, fmt in METRICS:
        means = {}
        cells = []
        for side in SIDES:
            values = [r[key] for r in results if r["side"] == side]
            means[side] = statistics.mean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{fmt.format(means[side])} ± {fmt.format(spread)}")
        ratio = means["cbow"] / means["gensim"] if means["gensim"] else float("nan")
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def runs_table(results: list[dict[str, Any]]) -> str:
    lines = ["| side | seed | " + " | ".join(title for _, title, _ in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for r in results:
        lines.append(f"| {r['side']} | {r['seed']} | " + " | ".join(fmt.format(r[k]) for k, _, fmt in METRICS) + " |")
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str:
    def mean(side: str, key: str) -> float:
        return statistics.mean(r[key] for r in results if r["side"] == side)

    gap = mean("cbow", "wordsim353_spearman") - mean("gensim", "wordsim353_spearman")
    share = mean("cbow", "words_per_sec") / mean("gensim", "words_per_sec")
    return (f"- Spearman: CBOW {gap:+.3f} vs gensim (target: at least -0.020): "
            f"**{'met' if gap >= -0.02 else 'not met'}**\n"
            f"- Throughput: CBOW at {share:.0%} of gensim's words/sec (target: at least 30 %): "
            f"**{'met' if share >= 0.30 else 'not met'}**")


def write_report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    first = results[0]
    settings = shared_settings(args)
    return f"""# words: CBOW (ours) vs gensim Word2Vec (CBOW)

Both sides trained on the same token stream (Wikipedia extract + Lee corpus from gensim's test data,
State of the Union addresses 1790-2021; {first.get('analogy_questions', 0):,} analogy questions and
{first.get('wordsim353_pairs', 0)} WordSim353 pairs in the vocabulary), with the same settings:
{", ".join(f"{k} {v}" for k, v in settings.items())}, subsampling, word2vec's linearly decaying
learning rate. gensim: `Word2Vec(sg=0, cbow_mean=1, workers=2)`. CBOW: our TensorFlow code,
{args.batch_size} targets per SGD step. {len(args.seeds)} seed(s) per side: {", ".join(map(str, args.seeds))}.

**Machine:** {machine()}

## Results

{summary_table(results)}

{verdict(results)}

Rerun: `nice -n 10 python -m benchmarks.words --seeds {" ".join(map(str, args.seeds))} --epochs {args.epochs}`
(took {seconds / 60:.0f} min).

## Every run

{runs_table(results)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.words", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2048, help="CBOW targets per SGD step.")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "words.md")
    parser.add_argument("--one", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        settings = shared_settings(args)
        result = train_gensim(args.seed, settings) if args.one == "gensim" else train_ours(args.seed, settings, args.batch_size)
        print(json.dumps(result))
        return 0
    started = time.perf_counter()
    results = []
    partial = args.output.with_suffix(".runs.json")
    for seed in args.seeds:
        for side in SIDES:
            results.append(run_one(side, seed, args))
            print(json.dumps(results[-1]), flush=True)
            partial.write_text(json.dumps(results, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(write_report(results, args, time.perf_counter() - started))
    partial.unlink(missing_ok=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
