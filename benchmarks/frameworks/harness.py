"""Measures one implementation inside this process and prints the numbers as JSON on the last line.

Run in a fresh process per implementation (Keras fixes its backend at import, and peak memory is a
per-process number): `python -m benchmarks.frameworks.harness NAME --data SPLITS.npz --epochs 3`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.frameworks import IMPLEMENTATIONS
from benchmarks.frameworks.common import BATCH_SIZE, batch_order, initial_weights, learning_rate

LATENCY_REPEATS = {1: 100, 256: 30}
VERSION_MODULES = ("keras", "tensorflow", "jax", "torch", "pytensor")


def load_implementation(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.frameworks.{IMPLEMENTATIONS[name].module}")


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the parent across fork and exec, so a child would report at least the runner's own peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loaded_versions() -> dict[str, str]:
    """Versions of the frameworks this process actually imported."""
    return {name: sys.modules[name].__version__ for name in VERSION_MODULES if name in sys.modules}


def keras_backend() -> str:
    """The backend Keras actually runs on, if this process uses Keras."""
    return sys.modules["keras"].backend.backend() if "keras" in sys.modules else ""


def accuracy(net: Any, x: np.ndarray, y: np.ndarray, chunk: int = 1000) -> float:
    predictions = np.concatenate([net.predict(x[i:i + chunk]).argmax(axis=1) for i in range(0, len(x), chunk)])
    return float((predictions == y).mean())


def benchmark(module: ModuleType, data: dict[str, np.ndarray], epochs: int, seed: int) -> dict[str, Any]:
    """Train for `epochs` in the shared batch order, then time inference; every number for one table row."""
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    total_steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
    start = time.perf_counter()
    net = module.Net(initial_weights(seed), seed)
    first_step_s, step, epoch_s, epoch_loss = None, 0, [], []
    for epoch in range(epochs):
        epoch_start, losses = time.perf_counter(), []
        for batch in batch_order(len(x_train), epoch, seed):
            losses.append(net.train_step(x_train[batch], y_train[batch], learning_rate(step, total_steps)))
            step += 1
            if first_step_s is None:
                first_step_s = time.perf_counter() - start
        epoch_s.append(time.perf_counter() - epoch_start)
        epoch_loss.append(float(np.mean(losses)))
        print(f"epoch {epoch + 1}/{epochs}: loss {epoch_loss[-1]:.4f}, {epoch_s[-1]:.1f} s", file=sys.stderr)
    steady = epoch_s[1:] or epoch_s  # the first epoch also pays for tracing / compiling
    return {
        "epochs": epochs,
        "test_accuracy": accuracy(net, x_test, y_test),
        "epoch_loss": epoch_loss,
        "epoch_s": epoch_s,
        "time_per_epoch_s": statistics.mean(steady),
        "first_step_s": first_step_s,
        "latency_1_ms": median_ms(lambda: net.predict(x_test[:1]), LATENCY_REPEATS[1]),
        "latency_256_ms": median_ms(lambda: net.predict(x_test[:256]), LATENCY_REPEATS[256]),
    }


def smoke_losses(module: ModuleType, steps: int = 10, seed: int = 0) -> list[float]:
    """Full-batch steps on a small, learnable synthetic set: the loss of each step (for the tests)."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) > 0.8).astype(np.float32)
    y = rng.integers(0, 10, 256)
    x = templates[y] * 0.9 + rng.random((256, 28, 28), dtype=np.float32) * 0.1
    net = module.Net(initial_weights(seed), seed)
    return [net.train_step(x, y, 0.02) for _ in range(steps)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frameworks.harness", description=__doc__)
    parser.add_argument("name", choices=sorted(IMPLEMENTATIONS))
    parser.add_argument("--data", help="An .npz with x_train, y_train, x_test, y_test.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="Only a few steps on synthetic data.")
    parser.add_argument("--steps", type=int, default=10, help="Steps of --smoke.")
    args = parser.parse_args(argv)
    import_start = time.perf_counter()
    module = load_implementation(args.name)
    import_s = time.perf_counter() - import_start
    if args.smoke:
        result: dict[str, Any] = {"losses": smoke_losses(module, args.steps)}
    else:
        with np.load(args.data) as archive:
            data = {key: archive[key] for key in archive.files}
        result = benchmark(module, data, args.epochs, args.seed)
    result.update(name=args.name, backend=keras_backend(), import_s=import_s, versions=loaded_versions(), load_average=os.getloadavg()[0],
                  peak_rss_mib=peak_rss_mib())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
