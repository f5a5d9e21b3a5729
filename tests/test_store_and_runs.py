"""The model store (versions, pins, atomic writes) and the run registry (success, failure, resume)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from app.runs import registry
from app.runs.db import open_registry
from app.serving.device import DeviceUnavailable, configure_device
from app.store.layout import complete_versions, new_version
from app.store.manifest import MANIFEST
from app.store.store import ModelStore
from tests.conftest import make_settings, synthetic_digits, train_tiny_digits
from training.recording import TrainingRun


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("store"))
    train_tiny_digits(settings, epochs=1)
    train_tiny_digits(settings, epochs=1, seed=2)
    return settings


def test_newest_version_is_served(two_versions):
    store = ModelStore(two_versions.MODEL_DIR, "/CPU:0")
    store.load_all()
    assert sorted(store.loaded["digits"]) == [1, 2]
    assert store.get("digits").version == 2
    assert store.get("digits", 1).version == 1


def test_pinned_version_is_served(two_versions):
    store = ModelStore(two_versions.MODEL_DIR, "/CPU:0", pinned={"digits": 1})
    store.load_all()
    assert store.get("digits").version == 1


def test_half_written_versions_are_ignored(two_versions, tmp_path):
    root = two_versions.MODEL_DIR / "digits"
    (root / "7").mkdir()  # no manifest: an interrupted copy
    (root / ".tmp-abc").mkdir()
    try:
        assert complete_versions(two_versions.MODEL_DIR, "digits") == [1, 2]
    finally:
        (root / "7").rmdir()
        (root / ".tmp-abc").rmdir()


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with new_version(tmp_path, "m") as (staging, version):
            (staging / "model.keras").write_text("half")
            raise RuntimeError("disk full")
    assert list((tmp_path / "m").iterdir()) == []


def test_a_corrupt_version_is_refused_and_the_old_one_serves(two_versions, tmp_path):
    import shutil

    model_dir = tmp_path / "models"
    shutil.copytree(two_versions.MODEL_DIR, model_dir)
    (model_dir / "digits/2/model.keras").write_bytes(b"not a model")
    store = ModelStore(model_dir, "/CPU:0")
    store.load_all()
    assert store.get("digits").version == 1
    assert "sha256" in store.failures["digits"][2]


def test_manifest_links_back_to_its_run(two_versions):
    manifest = json.loads((two_versions.MODEL_DIR / "digits/2" / MANIFEST).read_text())
    record = json.loads((two_versions.MODEL_DIR / "digits/2/run.json").read_text())
    assert manifest["run_id"] == record["id"] and record["version"] == 2
    assert record["status"] == "succeeded" and record["artifact_sha256"] == manifest["artifact_sha256"]
    assert manifest["preprocessing"] == {"kind": "mnist_digit"}


def test_a_failing_run_is_recorded_as_failed(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(ValueError):
        with TrainingRun("digits", settings, params={"a": 1}, seed=3, dataset="x") as run:
            raise ValueError("bad hyperparameter")
    with open_registry(settings.database_url)() as session:
        stored = registry.get_run(session, run.run_id)
    assert stored.status == "failed" and "bad hyperparameter" in stored.error
    assert stored.params == {"a": 1} and stored.ended_at is not None and stored.duration_s >= 0


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.stop_epoch:
            raise KeyboardInterrupt


def fit_tiny(run: TrainingRun, extra=()) -> keras.Model:
    x, y = synthetic_digits(200)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=50, validation_split=0.2, verbose=0,
              callbacks=[*run.callbacks(), *extra])
    return model


def test_resume_continues_the_same_run_from_the_last_epoch(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with TrainingRun("tiny", settings, params={}, seed=1, dataset="x") as first:
            fit_tiny(first, [StopAfter(2)])
    with TrainingRun("tiny", settings, params={}, seed=1, dataset="x", resume=True) as second:
        assert second.run_id == first.run_id
        model = fit_tiny(second)
        second.publish(model, task="classify", input_shape=[28, 28], test_metrics={}, labels=list("0123456789"))
    with open_registry(settings.database_url)() as session:
        run = registry.get_run(session, first.run_id)
    assert run.status == "succeeded" and run.version == 1
    assert [row["epoch"] for row in run.history] == [1, 2, 3]


def test_device_gpu_without_a_gpu_fails_clearly():
    with pytest.raises(DeviceUnavailable, match="no GPU"):
        configure_device("gpu")
    assert configure_device("cpu") == "/CPU:0"
    assert configure_device("auto") == "/CPU:0"


def test_batch_of_one_and_many_agree(two_versions):
    store = ModelStore(two_versions.MODEL_DIR, "/CPU:0")
    store.load_all()
    compiled = store.get("digits").compiled
    x, _ = synthetic_digits(5)
    together = compiled(x)
    alone = np.concatenate([compiled(x[i : i + 1]) for i in range(5)])
    assert np.allclose(together, alone, atol=1e-6)


def test_sigterm_fails_the_run_cleanly(tmp_path):
    import os
    import signal

    settings = make_settings(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with TrainingRun("tiny", settings, params={}, seed=1, dataset="x") as run:
            os.kill(os.getpid(), signal.SIGTERM)
    with open_registry(settings.database_url)() as session:
        stored = registry.get_run(session, run.run_id)
    assert stored.status == "failed" and "signal 15" in stored.error


def test_a_half_written_backup_starts_the_stage_afresh(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with TrainingRun("tiny", settings, params={}, seed=1, dataset="x") as first:
            fit_tiny(first, [StopAfter(2)])
    for weights in (settings.DATA_DIR / "checkpoints/tiny/backup").rglob("*.h5"):
        weights.write_bytes(b"half written")
    with TrainingRun("tiny", settings, params={}, seed=1, dataset="x", resume=True) as second:
        fit_tiny(second)
    assert [row["epoch"] for row in second.history()] == [1, 2, 3]


def test_published_models_carry_no_optimizer_state(two_versions):
    model = keras.saving.load_model(two_versions.MODEL_DIR / "digits/1/model.keras", compile=False)
    assert getattr(model, "optimizer", None) is None


def test_epochs_of_two_stages_are_both_kept(tmp_path):
    settings = make_settings(tmp_path)
    with TrainingRun("tiny", settings, params={}, seed=1, dataset="x") as run:
        run.record_epoch({"epoch": 1, "stage": "frozen", "loss": 2.0})
        run.record_epoch({"epoch": 1, "stage": "fine-tune", "loss": 1.0})
        run.record_epoch({"epoch": 1, "stage": "fine-tune", "loss": 0.5})  # a resumed epoch replaces its own row
        assert [(r["stage"], r["loss"]) for r in run.history()] == [("frozen", 2.0), ("fine-tune", 0.5)]
