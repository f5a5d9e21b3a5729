"""Endpoints that change state; every one requires the admin API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, Security
from pydantic import BaseModel, Field

from app.api.auth import KeyFirstRoute, api_key_header
from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.api.runs import RunId, RunPublic, run_not_found, to_public
from app.api.schemas import error_responses
from app.errors import NotFound
from app.runs import registry
from app.store.layout import model_names
from app.store.watch import refresh_store

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Security(api_key_header)],
    route_class=KeyFirstRoute,
    responses=error_responses(400, 401, 403, 404, 408, 413, 415, 422, 500, 503),
)


class ReloadReport(BaseModel):
    loaded: list[str] = Field(description="Versions loaded (or reloaded) and now servable, as name/version.")
    refused: list[str] = Field(description="Versions that failed to load; the previous ones keep serving.")
    unloaded: list[str] = Field(description="Versions whose folders disappeared.")


# No control characters (C0, DEL, C1) nor Unicode's line and paragraph separators: PostgreSQL text
# cannot hold NUL, and a label is one line of text.
LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"


class RunLabel(BaseModel):
    # Required, so a body that forgets it (`{}`) is refused rather than taken as "clear the label".
    label: str | None = Field(
        max_length=128, pattern=LABEL_PATTERN,
        description="A free-form label of one line, at most 128 characters; null clears it.",
    )


@router.post("/models/reload", response_model=ReloadReport)
async def reload_models(store: StoreDep, force: bool = False) -> ReloadReport:
    """Pick up new or removed versions of every model now (force: reload all of them)."""
    return ReloadReport(**await refresh_store(store, force=force))


@router.post("/models/{name}/reload", response_model=ReloadReport)
async def reload_model(
    name: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")], store: StoreDep, force: bool = False
) -> ReloadReport:
    """Pick up new or removed versions of one model now (force: reload all of them)."""
    if name not in store.loaded and name not in store.failures and name not in model_names(store.model_dir):
        raise NotFound(f"no model '{name}' in the store")
    return ReloadReport(**await refresh_store(store, name, force))


@router.patch("/runs/{run_id}", response_model=RunPublic)
def relabel_run(run_id: RunId, body: RunLabel, session: SessionDep, settings: SettingsDep) -> RunPublic:
    """Set or clear a run's label."""
    run = registry.relabel_run(session, run_id, body.label)
    if run is None:
        raise run_not_found(run_id)
    return to_public(run, settings)


@router.delete("/runs/{run_id}", status_code=204, response_class=Response)
def delete_run(run_id: RunId, session: SessionDep) -> Response:
    """Delete a run record (its model version, if any, stays in the store)."""
    if not registry.delete_run(session, run_id):
        raise run_not_found(run_id)
    return Response(status_code=204)
