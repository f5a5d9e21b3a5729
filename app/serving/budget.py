"""A budget of pixels being decoded at once, shared by every model and route of the process.

A 40-megapixel 16-bit PNG of 137 KB takes about 0.8 GB at its peak while it is decoded and
prepared for the digits model; four at once took the service from 1.5 to 3.8 GB, and the batch
threads of several models could decode ten at once. Each large image holds its pixels from the
budget while it is decoded and prepared; one that would go over waits, on the worker thread that
decodes it (never on the event loop).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """At most `limit` pixels held at once; a holder that would go over waits for others to finish.

    An image over the whole budget takes all of it (it waits until nothing else is held, then runs
    alone), so every image gets its turn. A holder never waits while holding, so nothing deadlocks."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.held_pixels = 0
        self._changed = threading.Condition()

    @contextmanager
    def holding(self, pixels: int) -> Iterator[None]:
        share = min(max(0, int(pixels)), self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self.held_pixels + share <= self.limit)
            self.held_pixels += share
        try:
            yield
        finally:
            with self._changed:
                self.held_pixels -= share
                self._changed.notify_all()


@functools.lru_cache
def pixel_budget(limit: int) -> PixelBudget:
    """The process's one budget for `limit` (the MAX_DECODING_PIXELS setting): every app, model and
    route of the process holds from the same one."""
    return PixelBudget(limit)
