"""What the store holds and serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import StoreDep
from app.api.schemas import error_responses
from app.config import Batching
from app.store.store import ModelStore

LISTED_LABELS = 1000  # a 16k-word vocabulary would make /models a 250 KB answer

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(500))


class VersionPublic(BaseModel):
    version: int
    status: str  # loaded | refused
    error: str | None = None
    run_id: str | None = None
    created_at: str | None = None
    test_metrics: dict[str, Any] = {}
    load_seconds: float | None = None


class ModelPublic(BaseModel):
    name: str
    task: str | None
    description: str = ""
    served_version: int | None
    device: str
    input_spec: dict[str, Any] | None
    labels: list[str] = Field(description=f"The classes (or vocabulary), the first {LISTED_LABELS} of them.")
    label_count: int
    preprocessing: dict[str, Any]
    test_metrics: dict[str, Any]
    run_id: str | None
    extra: dict[str, Any] = Field({}, description="Model-specific manifest fields (thresholds, rules, ...).")
    batching: Batching | None = Field(None, description=(
        "The served version's batching in effect, each value from BATCHING_OVERRIDES, else the manifest's own "
        "`batching`, else the settings; null when batching is off."))
    versions: list[VersionPublic]


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


def describe_model(store: ModelStore, name: str) -> ModelPublic:
    loaded = store.loaded.get(name, {})
    failures = store.failures.get(name, {})
    versions = [
        VersionPublic(
            version=v, status="loaded", run_id=m.manifest.run_id, created_at=m.manifest.created_at,
            test_metrics=m.manifest.test_metrics, load_seconds=round(m.load_seconds, 3),
        )
        for v, m in sorted(loaded.items())
    ] + [VersionPublic(version=v, status="refused", error=e) for v, e in sorted(failures.items())]
    served = store.served_version(name)
    manifest = loaded[served].manifest if served is not None else None
    batcher = loaded[served].batcher if served is not None else None
    return ModelPublic(
        name=name,
        task=manifest.task if manifest else None,
        description=manifest.description if manifest else "",
        served_version=served,
        device=store.device,
        input_spec=manifest.input_spec.model_dump() if manifest else None,
        labels=manifest.labels[:LISTED_LABELS] if manifest else [],
        label_count=len(manifest.labels) if manifest else 0,
        preprocessing=manifest.preprocessing if manifest else {},
        test_metrics=manifest.test_metrics if manifest else {},
        run_id=manifest.run_id if manifest else None,
        extra=dict(manifest.model_extra or {}) if manifest else {},
        batching=None if batcher is None else Batching(max_batch_size=batcher.max_batch_size,
                                                       max_delay_ms=batcher.max_delay_ms,
                                                       max_in_flight=batcher.max_in_flight),
        versions=sorted(versions, key=lambda v: v.version),
    )


@router.get("", response_model=ModelsPublic)
def read_models(store: StoreDep) -> ModelsPublic:
    """Every model: its versions (loaded or refused), the served one, input spec, labels, metrics."""
    names = sorted(set(store.loaded) | set(store.failures))
    data = [describe_model(store, name) for name in names]
    return ModelsPublic(data=data, count=len(data))


