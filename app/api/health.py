"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.schemas import error_responses

router = APIRouter(tags=["health"], responses=error_responses(500))


class HealthPublic(BaseModel):
    status: str


class ReadyPublic(BaseModel):
    ready: bool
    models: list[str]


# `async def`: answered on the event loop, never waiting for a worker thread (all of them may be
# busy with uploads or model reloads, and a liveness probe must not time out then).
@router.get("/health", response_model=HealthPublic)
async def read_health() -> HealthPublic:
    """The process is alive."""
    return HealthPublic(status="ok")


@router.get("/ready", response_model=ReadyPublic, responses={503: {"model": ReadyPublic}})
async def read_ready(request: Request) -> JSONResponse:
    """Models are loaded and requests can be served (503 until then)."""
    ready = bool(getattr(request.app.state, "ready", False))
    store = getattr(request.app.state, "store", None)
    body = ReadyPublic(ready=ready, models=store.names() if store and ready else [])
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
