"""The manifest written beside every model version: what the service needs to serve it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.config import Batching

MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
RUN_RECORD = "run.json"
PLOTS_DIR = "plots"

Task = Literal["classify", "anomaly", "embedding", "detect"]


class InputSpec(BaseModel):
    shape: list[int] = Field(description="One example's shape, without the batch dimension.")
    dtype: str = "float32"


class Manifest(BaseModel):
    """Models may add their own fields (an anomaly threshold, say); unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    task: Task
    description: str = ""
    run_id: str | None = None
    created_at: str
    input_spec: InputSpec
    labels: list[str] = Field(default_factory=list)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    test_metrics: dict[str, Any] = Field(default_factory=dict)
    dataset: str | None = None
    data_fingerprint: str | None = None
    artifact_sha256: str | None = None
    batching: Batching | None = None  # this model's own batching, when the global settings do not suit it


def read_manifest(version_dir: Path) -> Manifest:
    return Manifest.model_validate(json.loads((version_dir / MANIFEST).read_text()))


def manifest_run_id(version_dir: Path) -> str | None:
    """The run that produced the version in this folder, or None (no folder, no readable manifest)."""
    try:
        run_id = json.loads((version_dir / MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
