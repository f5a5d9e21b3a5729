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
from app.config import Settings
from app.errors import NotFound
from app.runs import registry
from app.runs.models import Run
from app.store.manifest import PLOTS_DIR, manifest_run_id

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
    plot_urls: list[str] = Field([], description="The run's plots still on disk.")
    artifact_replaced: bool = Field(
        False, description="The version folder the run published to now holds another run's model (a retrained "
                           "version): this run's model and plots are gone.")


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


def plots_folder(run: Run, settings: Settings) -> Path | None:
    """Where the run's plots are: its version folder, or its run folder when it published none.

    None when the version folder now holds another run's model: a version retrained in place, or
    a run that published to another model store under the same name and version. Its plots would be
    that other run's."""
    if not run.artifact_path:
        return settings.DATA_DIR / "runs" / run.id / PLOTS_DIR
    folder = settings.MODEL_DIR / run.artifact_path
    owner = manifest_run_id(folder)  # None: the folder is gone too, and so are the plots ("missing on disk")
    return None if owner is not None and owner != run.id else folder / PLOTS_DIR


def to_public(run: Run, settings: Settings) -> RunPublic:
    """The run as the API shows it: plot links only for plots still on disk."""
    public = RunPublic.model_validate(run)
    folder = plots_folder(run, settings)
    public.artifact_replaced = folder is None
    public.plot_urls = [f"/runs/{run.id}/plots/{name}" for name in run.plots or []
                        if folder is not None and (folder / name).is_file()]
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
def read_runs(request: Request, session: SessionDep, settings: SettingsDep) -> RunsPublic:
    """Training runs, newest first; filter by model or status, page with limit/offset."""
    query = read_query(request, RunsQuery)
    runs, total = registry.list_runs(session, query.model, query.status, query.limit, query.offset)
    return RunsPublic(data=[to_public(run, settings) for run in runs], count=total)


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> RunPublic:
    """One run with its per-epoch history, test metrics and plot links."""
    return to_public(find_run(session, run_id), settings)


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
    folder = plots_folder(run, settings)
    if folder is None:
        raise NotFound(f"run '{run_id}' published {run.artifact_path}, which now holds another run's model; "
                       "its plots went with its version")
    path = folder / name
    if not path.is_file():
        raise NotFound(f"plot '{name}' of run '{run_id}' is missing on disk")
    return JsonRangeFileResponse(path, media_type="image/png")
