"""Poll the model folder and swap in new versions while the service runs."""

from __future__ import annotations

import asyncio
import logging

import anyio

from app.store.store import ModelStore

log = logging.getLogger(__name__)


async def refresh_store(store: ModelStore, name: str | None = None, force: bool = False) -> dict[str, list[str]]:
    """Load what changed on disk (in a worker thread), then retire what it replaced."""
    report = await anyio.to_thread.run_sync(store.refresh, name, force)
    await store.close_retired()
    if any(report.values()):
        log.info("model store refreshed: %s", report)
    return report


async def watch_store(store: ModelStore, interval_s: float) -> None:
    """Every `interval_s`, pick up new, changed or removed version folders; never crash the service."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh_store(store)
        except Exception:
            log.exception("model store refresh failed; serving what is loaded")
