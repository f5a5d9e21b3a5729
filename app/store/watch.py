"""Poll the model folder and swap in new versions while the service runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio

from app.serving.heap import trim_heap
from app.store.store import ModelStore

log = logging.getLogger(__name__)


async def refresh_store(store: ModelStore, name: str | None = None, force: bool = False) -> dict[str, list[str]]:
    """Load what changed on disk (in a worker thread), then retire what it replaced.

    One refresh at a time, queued here on the event loop: refreshes waiting on the store's lock in
    worker threads would hold the threads every plain `def` route needs (60 concurrent admin
    reloads stalled /models for 30 s)."""
    async with store.refreshing:
        report = await anyio.to_thread.run_sync(store.refresh, name, force)
    await store.close_retired()
    if any(report.values()):
        log.info("model store refreshed: %s", report)
    return report


async def watch_store(store: ModelStore, interval_s: float, housekeeping: Callable[[], None] | None = None) -> None:
    """Every `interval_s`, pick up new, changed or removed version folders, run `housekeeping`
    (marking dead training runs stale) and give freed memory back to the OS, in worker threads;
    never crash the service."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh_store(store)
            if housekeeping is not None:
                await anyio.to_thread.run_sync(housekeeping)
            await anyio.to_thread.run_sync(trim_heap)
        except Exception:
            log.exception("periodic store refresh failed; serving what is loaded")
