"""`python -m benchmarks.frameworks`: train the digits network in every installed framework, each in
its own process, and write the results table into docs/frameworks.md.

Frameworks that are not installed are skipped, and the table says so (`pip install '.[compare]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import REPO_ROOT, get_settings
from benchmarks.frameworks import IMPLEMENTATIONS
from benchmarks.frameworks.report import render, write_into

DOC = REPO_ROOT / "docs" / "frameworks.md"


def write_splits(folder: Path) -> Path:
    """The digits model's train and test splits, saved once so the measured processes read plain
    arrays and import no framework but their own."""
    path = folder / "mnist-splits.npz"
    if not path.is_file():
        from training.digits import load_mnist  # imports TensorFlow: only here, in the parent

        splits = load_mnist(get_settings())
        (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def run_one(name: str, data: Path, epochs: int, seed: int) -> dict[str, Any]:
    """One implementation in a fresh process; its last stdout line is the JSON result."""
    impl = IMPLEMENTATIONS[name]
    if missing := impl.missing():
        return {"skipped": f"{', '.join(missing)} not installed"}
    command = [sys.executable, "-m", "benchmarks.frameworks.harness", name,
               "--data", str(data), "--epochs", str(epochs), "--seed", str(seed)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **impl.env}
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return {"skipped": f"failed with exit code {done.returncode} (see the log)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frameworks", description=__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="The same for every framework.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", choices=sorted(IMPLEMENTATIONS), help="Measure only these.")
    parser.add_argument("--resume", action="store_true", help="Keep results already measured with these epochs.")
    parser.add_argument("--no-doc", action="store_true", help="Print the table; leave docs/frameworks.md alone.")
    args = parser.parse_args(argv)
    folder = get_settings().DATA_DIR / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    results_path = folder / "frameworks.json"
    results: dict[str, dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.resume:
        results = {name: r for name, r in results.items() if args.only and name not in args.only}
    results = {name: r for name, r in results.items() if r.get("epochs") == args.epochs or "skipped" in r}
    data = write_splits(folder)
    for name in args.only or IMPLEMENTATIONS:
        if name in results and "skipped" not in results[name]:
            print(f"{name}: already measured, kept (--resume)")
            continue
        start = time.perf_counter()
        results[name] = run_one(name, data, args.epochs, args.seed)
        print(f"{name}: {results[name].get('skipped') or 'done'} ({time.perf_counter() - start:.0f} s wall)", flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    section = render(results, args.epochs, "python -m benchmarks.frameworks")
    print(section)
    if not args.no_doc:
        write_into(DOC, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
