"""Shared helpers for `python -m training evaluate <model>`: load the served version, store results."""

from __future__ import annotations

from typing import Any

import keras

from app.config import Settings
from app.runs import registry
from app.runs.db import open_registry
from app.store.layout import complete_versions, version_dir
from app.store.manifest import MODEL_FILE, Manifest, read_manifest


def load_stored(settings: Settings, name: str, version: int | None) -> tuple[keras.Model, Manifest]:
    """The version the service would serve (newest, or pinned), or the one asked for."""
    versions = complete_versions(settings.MODEL_DIR, name)
    if not versions:
        raise SystemExit(f"no stored version of {name} in {settings.MODEL_DIR}; train it first")
    chosen = version or settings.PINNED_VERSIONS.get(name) or versions[-1]
    if chosen not in versions:
        raise SystemExit(f"{name} has no version {chosen} (versions: {versions})")
    path = version_dir(settings.MODEL_DIR, name, chosen)
    return keras.saving.load_model(path / MODEL_FILE, compile=False, safe_mode=True), read_manifest(path)


def store_evaluation(settings: Settings, manifest: Manifest, metrics: dict[str, Any]) -> None:
    """Keep the evaluation with the run that made the version (when the registry knows it)."""
    if not manifest.run_id:
        return
    with open_registry(settings.database_url)() as session:
        run = registry.get_run(session, manifest.run_id)
        if run is not None:
            registry.update_run(session, run.id, test_metrics={**(run.test_metrics or {}), "evaluation": metrics})
