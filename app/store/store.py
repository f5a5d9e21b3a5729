"""Load versions from the model store and pick the one each request is served by."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import keras
import numpy as np

from app.config import Batching
from app.detection.tiled import TILES_PER_CALL
from app.errors import BadInput, NotFound
from app.serving import metrics
from app.serving.batching import DynamicBatcher, Prepare, prepare_together
from app.serving.runtime import CompiledModel
from app.store.checks import check_version
from app.store.layout import complete_versions, model_names, version_dir, version_mark
from app.store.manifest import MODEL_FILE, Manifest, read_manifest

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """One loaded version: its manifest, the Keras model and the compiled function that runs it."""

    manifest: Manifest
    path: Path
    compiled: CompiledModel
    load_seconds: float
    batcher: DynamicBatcher | None = None
    # Values a router derives once from this version (a vocabulary's unit vectors, say), not per request.
    derived: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    async def infer(self, inputs: Any, prepare: Prepare | None = None, rows: int | None = None) -> Any:
        """Run a batch off the event loop, gathered with other requests' when batching is on.

        `inputs` is a prepared batch, or with `prepare` raw inputs (uploads, say) that `prepare`
        turns into `rows` rows on the thread that runs the model; either way a batch that does not
        fit the model is a 4xx for this request alone."""
        checked = CheckedPrepare(prepare, self.compiled.input_shape, self.name)
        if self.batcher is None or self.batcher.closed:  # closed: replaced by a reload mid-request
            return await anyio.to_thread.run_sync(lambda: self.compiled(checked(inputs)))
        return await self.batcher.submit(inputs, checked, rows)


@dataclass(frozen=True)
class CheckedPrepare:
    """A request's `prepare` (or none), then a check that its rows fit the model: a batch that does
    not fit is a 4xx for this request alone. Equal for equal `prepare`s, so the batcher prepares
    the requests of one model together (`many`) when their `prepare` can."""

    prepare: Prepare | None
    input_shape: tuple[int, ...]
    name: str

    def __call__(self, inputs: Any) -> np.ndarray:
        rows = self.prepare(inputs) if self.prepare is not None else inputs
        if (error := self.misfit(rows)) is not None:
            raise error
        return rows

    def many(self, inputs: list[Any]) -> list[np.ndarray | Exception]:
        prepared = list(inputs) if self.prepare is None else prepare_together(self.prepare, inputs)
        return [rows if isinstance(rows, Exception) else self.misfit(rows) or rows for rows in prepared]

    def misfit(self, rows: np.ndarray) -> BadInput | None:
        """The 4xx for rows that do not fit the model, or None."""
        if tuple(rows.shape[1:]) == self.input_shape:
            return None
        return BadInput(f"input of shape {tuple(rows.shape[1:])} does not fit {self.name}'s {self.input_shape}")


# (model name, the manifest's own batching) -> (max_batch_size, max_delay_ms, max_in_flight) or None.
BatchingPolicy = Callable[[str, "Batching | None"], "tuple[int, float, int] | None"]


def no_batching(_model: str, _own: Batching | None = None) -> None:
    return None


# Words a words model ranks in its graph: the default MAX_K (100) plus MAX_ANALOGY_TERMS (10);
# the service passes its own settings' sum (`create_app`).
EMBEDDING_TOP_K = 110


def load_version(path: Path, device: str, batching: BatchingPolicy = no_batching,
                 embedding_top_k: int = EMBEDDING_TOP_K) -> LoadedModel:
    """Load and warm one version folder; refuse it if its weights are not what the manifest says.

    A word-embedding model answers its `embedding_top_k` best words per query, ranked in the graph."""
    started = time.perf_counter()
    manifest = read_manifest(path)
    if (manifest.name, str(manifest.version)) != (path.parent.name, path.name):
        raise ValueError(f"manifest says {manifest.name}/{manifest.version} but lies in {path.parent.name}/{path.name}")
    weights = path / MODEL_FILE
    if manifest.artifact_sha256 and file_sha256(weights) != manifest.artifact_sha256:
        raise ValueError(f"{weights} does not match the sha256 in its manifest")
    model = keras.saving.load_model(weights, compile=False, safe_mode=True)
    top_k = min(embedding_top_k, len(manifest.labels)) if manifest.task == "embedding" else None
    check_version(manifest, model)
    max_rows = TILES_PER_CALL if manifest.task == "detect" else None
    compiled = CompiledModel(model, manifest.input_spec.shape, manifest.input_spec.dtype, device, top_k, max_rows)
    compiled.warm_up()
    policy = batching(manifest.name, manifest.batching)
    batcher = DynamicBatcher(compiled, manifest.name, *policy) if policy else None
    return LoadedModel(manifest, path, compiled, time.perf_counter() - started, batcher)


def settle_heap() -> None:
    """Collect garbage now, then freeze what survives (the loaded models) out of future collections.

    A Keras model and its traced graph sit in reference cycles, so replaced versions are freed only by
    a collection: run it right after a reload, so memory returns to its level. Freezing the long-lived
    objects keeps the collector's full passes, which otherwise walk every loaded model's objects, from
    pausing requests for tens of milliseconds.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


TASK_NOUNS = {"classify": "a classifier", "anomaly": "an anomaly model", "embedding": "a word-embedding model",
              "detect": "a detector"}


@dataclass
class ModelStore:
    """Every loaded version of every model; the newest is served unless a version is pinned."""

    model_dir: Path
    device: str
    pinned: dict[str, int] = field(default_factory=dict)
    batching: BatchingPolicy = no_batching
    embedding_top_k: int = EMBEDDING_TOP_K
    # What the routes derive from a version (a vocabulary's lookups), run as it loads, off the event loop.
    on_load: Callable[[LoadedModel], None] = lambda _loaded: None
    loaded: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    failures: dict[str, dict[int, str]] = field(default_factory=dict)
    # What each refused version's files looked like when it was refused: changed files are retried.
    refused_marks: dict[tuple[str, int], tuple] = field(default_factory=dict)
    retired: list[LoadedModel] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one `refresh_store` at a time

    def load_all(self) -> None:
        self.refresh()

    def refresh(self, name: str | None = None, force: bool = False) -> dict[str, list[str]]:
        """Bring the loaded versions in line with the folders on disk.

        New versions are loaded beside the served one and swapped in only once warm; versions whose
        folder disappeared are dropped; `force` reloads every version (and retries refused ones).
        Replaced models go to `retired`, for the caller to close once their requests are answered.
        """
        report: dict[str, list[str]] = {"loaded": [], "refused": [], "unloaded": []}
        with self._lock:
            names = [name] if name else sorted(set(model_names(self.model_dir)) | set(self.loaded) | set(self.failures))
            for model in names:
                on_disk = complete_versions(self.model_dir, model)
                for version in on_disk:
                    if force or not self._known(model, version):
                        ok = self.load(model, version)
                        report["loaded" if ok else "refused"].append(f"{model}/{version}")
                for version in sorted(set(self.loaded.get(model, {})) - set(on_disk)):
                    self._unload(model, version)
                    report["unloaded"].append(f"{model}/{version}")
                for version in set(self.failures.get(model, {})) - set(on_disk):
                    self.failures[model].pop(version)
                    self.refused_marks.pop((model, version), None)
                if not self.loaded.get(model) and not self.failures.get(model):
                    self.loaded.pop(model, None)
                    self.failures.pop(model, None)
        return report

    def _known(self, name: str, version: int) -> bool:
        """Loaded, or refused and unchanged on disk since (a fixed folder is loaded again)."""
        if version in self.loaded.get(name, {}) and version not in self.failures.get(name, {}):
            return True
        mark = self.refused_marks.get((name, version))
        return mark is not None and mark == version_mark(version_dir(self.model_dir, name, version))

    def _unload(self, name: str, version: int) -> None:
        versions = dict(self.loaded.get(name, {}))
        self.retired.append(versions.pop(version))
        self.loaded = {**self.loaded, name: versions}
        with contextlib.suppress(KeyError):  # its load-time series goes with it: /metrics lists what is loaded
            metrics.MODEL_LOAD_SECONDS.remove(name, str(version))

    def load(self, name: str, version: int) -> LoadedModel | None:
        """Load one version beside the others; a broken version is logged and reported, not fatal."""
        path = version_dir(self.model_dir, name, version)
        try:
            model = load_version(path, self.device, self.batching, self.embedding_top_k)
            self.on_load(model)
        except Exception as error:  # any failure to load must leave the service serving
            log.error("refused %s version %s: %s", name, version, error)
            self.failures.setdefault(name, {})[version] = f"{type(error).__name__}: {error}"
            self.refused_marks[(name, version)] = version_mark(path)
            return None
        self.failures.get(name, {}).pop(version, None)
        self.refused_marks.pop((name, version), None)
        previous = self.loaded.get(name, {}).get(version)
        # Replace the mapping rather than mutate it, so readers always see a whole one.
        self.loaded = {**self.loaded, name: {**self.loaded.get(name, {}), version: model}}
        if previous is not None:
            self.retired.append(previous)
        metrics.MODEL_LOAD_SECONDS.labels(name, str(version)).set(model.load_seconds)
        log.info("loaded %s version %s in %.2fs", name, version, model.load_seconds)
        return model

    def served_version(self, name: str) -> int | None:
        versions = self.loaded.get(name, {})
        pinned = self.pinned.get(name)
        if pinned in versions:
            return pinned
        return max(versions, default=None)

    def get(self, name: str, version: int | None = None, task: str | None = None) -> LoadedModel:
        """The served (or asked-for) version of `name`; with `task`, only a model doing that task."""
        model = self._get(name, version)
        if task is not None and model.manifest.task != task:
            raise NotFound(f"model '{name}' is not {TASK_NOUNS[task]} (those are: {self.names(task)})")
        return model

    def _get(self, name: str, version: int | None) -> LoadedModel:
        versions = self.loaded.get(name)
        if not versions:
            known = ", ".join(sorted(self.loaded)) or "none"
            raise NotFound(f"unknown model '{name}' (models: {known})")
        chosen = self.served_version(name) if version is None else version
        if chosen not in versions:
            raise NotFound(f"model '{name}' has no version {version} (versions: {sorted(versions)})")
        return versions[chosen]

    def names(self, task: str | None = None) -> list[str]:
        return sorted(
            name for name, versions in self.loaded.items()
            if versions and (task is None or self.get(name).manifest.task == task)
        )

    async def close_retired(self) -> None:
        """Stop the batchers of replaced models; requests still holding them run unbatched."""
        retired, self.retired = self.retired, []
        for model in retired:
            if model.batcher is not None:
                await model.batcher.close()
        if retired:
            del model, retired
            settle_heap()

    async def close(self) -> None:
        """Answer every queued request, then stop the batchers."""
        await self.close_retired()
        for versions in self.loaded.values():
            for model in versions.values():
                if model.batcher is not None:
                    await model.batcher.close()
