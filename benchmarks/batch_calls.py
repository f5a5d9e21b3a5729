"""Rows per second of a stored model called in-process: what batching can save, without HTTP.

    python -m benchmarks.batch_calls imagenet --rows 1 4 8
    python -m benchmarks.batch_calls trees --rows 36

For each row count n: one n-row call at a time, two n-row calls at once (two threads, as two batches
in flight run), and one 2n-row call at a time (two requests merged into one batch). Batching on can
only beat batching off by what these differ; a detector runs any batch in pieces of TILES_PER_CALL.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.config import REPO_ROOT
from app.store.layout import complete_versions, version_dir
from app.store.store import load_version
from benchmarks.machine import describe_machine


def rows_per_second(call: Callable[[], object], rows: int, threads: int, seconds: float) -> float:
    """Rows a second through `call` (`rows` rows each) from `threads` threads calling for `seconds`."""
    done = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            call()
            done[index] += rows

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="A model in the store (imagenet, trees, ...).")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=8.0, help="Per measurement.")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    args = parser.parse_args()
    model_dir = args.model_dir
    versions = complete_versions(model_dir, args.model)
    if not versions:
        raise SystemExit(f"no stored version of {args.model} in {model_dir}")
    loaded = load_version(version_dir(model_dir, args.model, versions[-1]), "/CPU:0")
    compiled = loaded.compiled
    print(f"{args.model} version {versions[-1]}, input {compiled.input_shape}; {describe_machine()}")
    rng = np.random.default_rng(0)
    for rows in args.rows:
        batch = rng.random((2 * rows, *compiled.input_shape), dtype=np.float32)
        compiled(batch)  # warm
        one = rows_per_second(lambda b=batch[:rows]: compiled(b), rows, 1, args.seconds)
        two = rows_per_second(lambda b=batch[:rows]: compiled(b), rows, 2, args.seconds)
        merged = rows_per_second(lambda b=batch: compiled(b), 2 * rows, 1, args.seconds)
        print(f"{rows:>4} rows: one call at a time {one:7.1f} rows/s | two at once {two:7.1f} | "
              f"one {2 * rows}-row call at a time {merged:7.1f}")


if __name__ == "__main__":
    main()
