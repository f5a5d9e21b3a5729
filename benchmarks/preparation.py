"""CPU time of the MNIST-style preparation: the uploads of one batch one by one, and together.

    python -m benchmarks.preparation [--uploads 16] [--repeats 2000]

The batcher prepares the uploads of every request in a batch together (`prepare_digit_images`);
this measures what that saves on the benchmark's upload, a 28x28 PNG digit, on the calling thread.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from app.preprocessing.mnist import prepare_digit, prepare_digit_images
from benchmarks.machine import describe_machine
from benchmarks.serve import small_png


def cpu_microseconds(work, repeats: int) -> float:
    for _ in range(max(1, repeats // 20)):  # warm the caches
        work()
    started = time.thread_time()
    for _ in range(repeats):
        work()
    return (time.thread_time() - started) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    png = small_png()
    images = [Image.open(io.BytesIO(png)) for _ in range(args.uploads)]
    for image in images:
        image.load()
    alone = cpu_microseconds(lambda: [prepare_digit(image) for image in images], args.repeats)
    together = cpu_microseconds(lambda: prepare_digit_images(images), args.repeats)
    print(describe_machine())
    print(f"{args.uploads} uploads of 28x28: one by one {alone:,.0f} µs, together {together:,.0f} µs "
          f"({together / alone:.0%})")


if __name__ == "__main__":
    main()
