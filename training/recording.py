"""A training run from start to published version: recorded in the registry, resumable, atomic.

    with TrainingRun("digits", settings, params=..., seed=..., source=MNIST, resume=args.resume) as run:
        model.fit(..., callbacks=run.callbacks())
        run.publish(model, task="classify", ...)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from app.config import Settings
from app.runs import registry
from app.runs.db import open_registry
from app.serving.device import configure_device
from app.store.layout import new_version
from app.store.manifest import MANIFEST, MODEL_FILE, PLOTS_DIR, RUN_RECORD, Manifest, write_json
from app.store.store import file_sha256
from training.sources import Source, fingerprint


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def _plain(value: Any) -> Any:
    """Keras logs hold numpy scalars; the registry stores JSON."""
    return float(value) if isinstance(value, (np.floating, np.integer, float, int)) else value


class EpochRecorder(keras.callbacks.Callback):
    """Writes each finished epoch's metrics (and the learning rate) into the run."""

    def __init__(self, run: TrainingRun, stage: str | None = None):
        super().__init__()
        self.run, self.stage = run, stage

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row: dict[str, Any] = {"epoch": epoch + 1, **{k: _plain(v) for k, v in (logs or {}).items()}}
        if self.stage:
            row["stage"] = self.stage
        self.run.record_epoch(row)


def without_optimizer(model: keras.Model) -> keras.Model:
    """A copy with the same weights and no optimizer state: what serving needs, a third of the size."""
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy
    except Exception:  # subclassed models cannot be cloned: save them as they are
        return model


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that starts afresh when a kill left its backup half-written."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as error:
            print(f"the epoch backup in {self.backup_dir} is unreadable ({error}); starting this stage afresh")
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            self._current_epoch = 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


class TrainingRun:
    """Context manager owning one run: opens or resumes it, records it, fails it on any error."""

    def __init__(
        self, model_name: str, settings: Settings, *, params: dict[str, Any], seed: int,
        source: Source | None = None, dataset: str | None = None, data_fingerprint: str | None = None,
        resume: bool = False,
    ):
        self.model_name, self.settings, self.params, self.seed = model_name, settings, params, seed
        self.dataset = dataset or (source.name if source else None)
        self.data_fingerprint = data_fingerprint or (fingerprint(source) if source else None)
        self.resume = resume
        self.checkpoint_dir = settings.DATA_DIR / "checkpoints" / model_name
        self.sessions = open_registry(settings.database_url)
        self.device = configure_device(settings.DEVICE)
        self.run_id = ""

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> TrainingRun:
        state = self.checkpoint_dir / "state.json"
        saved = json.loads(state.read_text()) if state.is_file() else {}
        owner = saved.get("pid")
        if owner and owner != os.getpid() and registry.process_alive(owner):
            raise RuntimeError(
                f"another {self.model_name} run (pid {owner}) is training with {self.checkpoint_dir}; "
                "wait for it or use another DATA_DIR"
            )
        keras.utils.set_random_seed(self.seed)
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (from `timeout`, `kill`, a container stop) fails the run cleanly, like Ctrl-C.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        with self.sessions() as session:
            if self.resume and saved:
                self.run_id = saved["run_id"]
                registry.resume_run(session, self.run_id)
                print(f"resuming run {self.run_id} from {self.checkpoint_dir}")
            else:
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
                run = registry.create_run(
                    session, self.model_name, seed=self.seed, params=self.params, dataset=self.dataset,
                    dataset_fingerprint=self.data_fingerprint, device=self.device,
                    library_versions=library_versions(),
                )
                self.run_id = run.id
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"run_id": self.run_id, "pid": os.getpid()}))
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    def recorded_params(self) -> dict[str, Any]:
        """The parameters in the registry: on a resumed run, those it started with."""
        with self.sessions() as session:
            return dict(registry.get_run(session, self.run_id).params or {})

    def __exit__(self, kind, error, tb) -> bool:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        if error is not None:
            message = "".join(traceback.format_exception_only(kind, error)).strip() or kind.__name__
            with self.sessions() as session:
                registry.fail_run(session, self.run_id, message)
            print(f"run {self.run_id} failed: {message}; `--resume` continues from the last epoch")
        return False

    # -- during training --------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """Plots and scratch files of this run, until they are published with a version."""
        return self.settings.DATA_DIR / "runs" / self.run_id

    @property
    def plots_dir(self) -> Path:
        return self.workdir / PLOTS_DIR

    def callbacks(self, stage: str | None = None) -> list[keras.callbacks.Callback]:
        """Record every epoch and keep a per-epoch backup, so `--resume` picks up where it stopped."""
        backup = self.checkpoint_dir / ("backup" if stage is None else f"backup-{stage}")
        return [EpochRecorder(self, stage), SafeBackupAndRestore(str(backup))]

    def record_epoch(self, row: dict[str, Any]) -> None:
        with self.sessions() as session:
            registry.record_epoch(session, self.run_id, row)

    def history(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return list(registry.get_run(session, self.run_id).history or [])

    def update(self, **fields: Any) -> None:
        with self.sessions() as session:
            registry.update_run(session, self.run_id, **fields)

    # -- the end -----------------------------------------------------------------------------
    def publish(
        self, model: keras.Model, *, task: str, input_shape: list[int], test_metrics: dict[str, Any],
        labels: list[str] | None = None, preprocessing: dict[str, Any] | None = None,
        description: str = "", batching: dict[str, float] | None = None, extra: dict[str, Any] | None = None,
    ) -> int:
        """Write the version atomically (weights, manifest, run record, plots) and close the run.

        `batching` is the model's own (the manifest's): for a model the service-wide settings do not suit."""
        plots = sorted(p.name for p in self.plots_dir.glob("*.png")) if self.plots_dir.is_dir() else []
        with new_version(self.settings.MODEL_DIR, self.model_name) as (staging, version):
            without_optimizer(model).save(staging / MODEL_FILE)
            digest = file_sha256(staging / MODEL_FILE)
            if plots:
                shutil.copytree(self.plots_dir, staging / PLOTS_DIR)
            with self.sessions() as session:
                run = registry.finish_run(
                    session, self.run_id, version=version, test_metrics=test_metrics,
                    artifact_path=f"{self.model_name}/{version}", artifact_sha256=digest, plots=plots,
                )
                record = registry.run_to_record(run)
            manifest = Manifest(
                name=self.model_name, version=version, task=task, description=description,
                run_id=self.run_id, created_at=record["ended_at"],
                input_spec={"shape": list(input_shape), "dtype": "float32"},
                labels=labels or [], preprocessing=preprocessing or {}, test_metrics=test_metrics,
                dataset=self.dataset, data_fingerprint=self.data_fingerprint, artifact_sha256=digest,
                batching=batching, **(extra or {}),
            )
            write_json(staging / RUN_RECORD, record)
            write_json(staging / MANIFEST, manifest.model_dump())
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        print(f"published {self.model_name} version {version} (run {self.run_id})")
        return version
