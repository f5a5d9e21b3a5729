"""The training-run registry, read-only: runs, their epochs, metrics and plots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import SessionDep, SettingsDep
from app.api.files import JsonRangeFileResponse
from app.api.query import QueryModel, WholeNumber, documented, read_query
from app.api.schemas import error_responses
from app.errors import NotFound
from app.runs import registry
from app.runs.models import Run
from app.store.manifest import PLOTS_DIR

router = APIRouter(prefix="/runs", tags=["runs"], responses=error_responses(404, 422, 500))


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model: str
    version: int | None
    status: str
    error: str | None
    seed: int | None
    params: dict[str, Any] | None
    dataset: str | None
    dataset_fingerprint: str | None
    history: list[dict[str, Any]] | None
    test_metrics: dict[str, Any] | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    device: str | None
    library_versions: dict[str, str] | None
    artifact_path: str | None
    artifact_sha256: str | None
    plots: list[str] | None
    label: str | None = None
    plot_urls: list[str] = []


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


def to_public(run: Run) -> RunPublic:
    public = RunPublic.model_validate(run)
    public.plot_urls = [f"/runs/{run.id}/plots/{name}" for name in run.plots or []]
    return public


def run_not_found(run_id: str) -> NotFound:
    return NotFound(f"run '{run_id}' not found")


def find_run(session, run_id: str) -> Run:
    run = registry.get_run(session, run_id)
    if run is None:
        raise run_not_found(run_id)
    return run


RunId = Annotated[str, PathParam(max_length=64, pattern=r"^[0-9a-f]+$")]


class RunsQuery(QueryModel):
    # Names as the store spells them; also keeps bytes PostgreSQL refuses in text (NUL) out of queries.
    model: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                              description="Only this model's runs.")
    status: str | None = Field(None, pattern="^(running|succeeded|failed)$", description="Only runs in this state.")
    limit: WholeNumber = Field(20, ge=1, le=100, description="Runs per page.")
    offset: WholeNumber = Field(0, ge=0, le=1_000_000, description="Runs to skip, newest first.")


@router.get("", response_model=RunsPublic, openapi_extra=documented(RunsQuery))
def read_runs(request: Request, session: SessionDep) -> RunsPublic:
    """Training runs, newest first; filter by model or status, page with limit/offset."""
    query = read_query(request, RunsQuery)
    runs, total = registry.list_runs(session, query.model, query.status, query.limit, query.offset)
    return RunsPublic(data=[to_public(run) for run in runs], count=total)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: RunId, session: SessionDep) -> RunPublic:
    """One run with its per-epoch history, test metrics and plot links."""
    return to_public(find_run(session, run_id))


@router.get(
    "/{run_id}/plots/{name}",
    response_class=JsonRangeFileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(400, 416)},  # 400, 416: a bad Range
)
def read_run_plot(
    run_id: RunId, name: Annotated[str, PathParam(max_length=128)], session: SessionDep, settings: SettingsDep
) -> JsonRangeFileResponse:
    """A plot the run produced (PNG): loss curves, confusion matrix, ..."""
    run = find_run(session, run_id)
    if name not in (run.plots or []):  # only names the run recorded ever reach the filesystem
        raise NotFound(f"run '{run_id}' has no plot '{name}' (plots: {run.plots or []})")
    if run.artifact_path:
        folder = settings.MODEL_DIR / run.artifact_path / PLOTS_DIR
    else:
        folder = settings.DATA_DIR / "runs" / run.id / PLOTS_DIR
    path = Path(folder) / name
    if not path.is_file():
        raise NotFound(f"plot '{name}' of run '{run_id}' is missing on disk")
    return JsonRangeFileResponse(path, media_type="image/png")
