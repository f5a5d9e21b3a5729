"""The watcher gives freed memory back to the OS on every tick."""

from __future__ import annotations

import asyncio
import platform

import pytest

from app.serving import heap
from app.store import watch
from app.store.store import ModelStore


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_heap_calls_glibcs_malloc_trim():
    assert heap.trim_heap() is True


def test_every_watcher_tick_trims_the_heap(tmp_path, monkeypatch):
    trims = []
    monkeypatch.setattr(watch, "trim_heap", lambda: trims.append(1) or True)

    async def three_ticks() -> None:
        task = asyncio.create_task(watch.watch_store(ModelStore(tmp_path, "/CPU:0"), 0.01))
        while len(trims) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(three_ticks(), 10))
    assert len(trims) >= 3
