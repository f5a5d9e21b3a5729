"""The ASGI app: `app.main:app`, built by `create_app()`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from app.api import admin, anomaly, baseline, classify, detect, health, metrics, models, runs, words
from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.config import Settings, get_settings
from app.logs import configure_logging
from app.middleware import (
    BodyLimitMiddleware,
    HeadMiddleware,
    JsonCORSMiddleware,
    MetricsMiddleware,
    RequestIdMiddleware,
)
from app.runs.db import open_registry
from app.runs.registry import mark_stale_runs
from app.runs.shipped import import_shipped_runs
from app.serving.affinity import pin_python_threads
from app.serving.device import configure_device, configure_threads
from app.store.store import ModelStore, settle_heap
from app.store.watch import watch_store

log = logging.getLogger("app")

# Every router of the service; a new endpoint module adds one line here.
ROUTERS = (
    health.router,
    metrics.router,
    models.router,
    runs.router,
    admin.router,
    classify.router,
    anomaly.router,
    words.router,
    detect.router,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every stored model once, and import the shipped run records, before serving."""
    settings: Settings = app.state.settings
    configure_threads(settings.TF_INTRA_OP_THREADS, settings.TF_INTER_OP_THREADS)
    device = configure_device(settings.DEVICE)
    app.state.sessions = open_registry(settings.database_url)
    with app.state.sessions() as session:
        imported = import_shipped_runs(session, settings.MODEL_DIR)

    def mark_stale() -> None:
        with app.state.sessions() as session:
            mark_stale_runs(session, settings.RUN_STALE_AFTER_S)

    mark_stale()
    store = ModelStore(settings.MODEL_DIR, device, dict(settings.PINNED_VERSIONS), settings.batching_for,
                       embedding_top_k=settings.MAX_K + settings.MAX_ANALOGY_TERMS, on_load=words.build_lookups)
    app.state.store = store
    app.state.detect_slots = asyncio.Semaphore(settings.MAX_DETECTS_IN_FLIGHT)
    await anyio.to_thread.run_sync(store.load_all)
    settle_heap()
    cpu = pin_python_threads(settings.EVENT_LOOP_CPU)  # after loading: TensorFlow's pools exist, unpinned
    log.info("ready: %s on %s (%d shipped runs imported)%s", store.names(), device, imported,
             "" if cpu is None else f"; Python threads on CPU {cpu}")
    app.state.ready = True
    watcher = None
    if settings.RELOAD_INTERVAL_S:
        watcher = asyncio.create_task(watch_store(store, settings.RELOAD_INTERVAL_S, housekeeping=mark_stale))
    yield
    app.state.ready = False
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    app = FastAPI(
        title="labnets",
        summary="Classic deep-learning models (digits, fashion, ECG, words, ImageNet, trees), trained offline with Keras and served over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.router.redirect_slashes = False  # the 404 handler redirects, to a relative URL (app/api/errors.py)
    app.state.settings = settings
    app.state.ready = False
    install_error_handlers(app)
    install_docs(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    if settings.BENCHMARK_BASELINES:
        app.include_router(baseline.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES,
                       read_timeout=settings.BODY_READ_TIMEOUT_S)
    if settings.CORS_ORIGINS:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.CORS_ORIGINS,
                           allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE"], allow_headers=["*"],
                           expose_headers=["X-Request-ID"])
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(HeadMiddleware)  # outside the rest, so it empties every HEAD answer
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
