"""Keep the interpreter's own threads on one core, and TensorFlow's on all of them.

Python runs one thread at a time. When the event loop and a batch thread take turns on two cores,
each turn starts on a core whose caches hold none of the objects the other thread just touched
(reference counts, dicts, the request's arrays), and that costs more than the work itself on
small models: measured here with the ASGI app called directly, 16 callers of
`/classify?model=digits`, the event loop's CPU per request fell from 520–610 µs to 400–430 µs and
throughput rose from 955–1,106 to 1,332–1,419 requests/s with both on one core. TensorFlow's
thread pools, started while the models load, keep every core for the arithmetic.
"""

from __future__ import annotations

import os
import threading


def pin_python_threads(index: int) -> int | None:
    """Pin the calling thread (the event loop) to the `index`-th CPU this process may use.

    Threads it starts from now on (the batch threads) inherit that CPU. Returns the CPU, or None
    when nothing was pinned: `index` -1, one CPU only, or a platform without CPU affinity."""
    if index < 0 or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    cpu = allowed[index % len(allowed)]
    try:
        os.sched_setaffinity(threading.get_native_id(), {cpu})
    except OSError:  # a sandbox that refuses it: serve unpinned
        return None
    return cpu
