"""A budget of pixels being decoded at once, shared by every model and route of the process.

A 40-megapixel 16-bit PNG of 137 KB takes about 0.8 GB at its peak while it is decoded and
prepared for the digits model; four at once took the service from 1.5 to 3.8 GB, and the batch
threads of several models could decode ten at once. Each large image holds its pixels from the
budget while it is decoded and prepared; one that would go over waits, on the worker thread that
decodes it (never on the event loop).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """At most `limit` pixels held at once; a holder that would go over waits for others to finish.

    Waiters are served in arrival order (a ticket each), so a large image is not passed over
    forever by a stream of small ones. An image over the whole budget takes all of it: it waits
    until nothing else is held, then runs alone. A holder never waits while holding, so nothing
    deadlocks."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.held_pixels = 0
        self._changed = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0  # the ticket whose turn it is to take its share

    @contextmanager
    def holding(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` (capped at the whole budget, so any image can run) for the block's duration."""
        share = min(max(0, int(pixels)), self.limit)
        with self._changed:
            ticket = next(self._tickets)
            self._changed.wait_for(lambda: self._serving == ticket and self.held_pixels + share <= self.limit)
            self.held_pixels += share
            self._serving += 1
            self._changed.notify_all()  # the next ticket may fit too
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
