"""The ASGI app: `app.main:app`, built by `create_app()`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from app.api import classify, detect, health, models, runs
from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.config import Settings, get_settings
from app.middleware import BodyLimitMiddleware, RequestIdMiddleware
from app.runs.db import open_registry
from app.runs.shipped import import_shipped_runs
from app.serving.device import configure_device
from app.store.store import ModelStore

log = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every stored model once, and import the shipped run records, before serving."""
    settings: Settings = app.state.settings
    device = configure_device(settings.DEVICE)
    app.state.sessions = open_registry(settings.database_url)
    with app.state.sessions() as session:
        imported = import_shipped_runs(session, settings.MODEL_DIR)
    store = ModelStore(settings.MODEL_DIR, device, dict(settings.PINNED_VERSIONS))
    app.state.store = store
    await anyio.to_thread.run_sync(store.load_all)
    log.info("ready: %s on %s (%d shipped runs imported)", store.names(), device, imported)
    app.state.ready = True
    yield
    app.state.ready = False


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL)
    app = FastAPI(
        title="labnets",
        summary="Five classic deep-learning models, trained offline with Keras and served over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ready = False
    install_error_handlers(app)
    install_docs(app)
    for module in (health, models, runs, classify, detect):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES,
                       read_timeout=settings.BODY_READ_TIMEOUT_S)
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
