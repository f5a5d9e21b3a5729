"""A version whose manifest disagrees with its network is refused when it loads, naming why."""

from __future__ import annotations

import asyncio
import threading
import time

import keras
import pytest

from app.store.checks import check_version
from app.store.manifest import Manifest
from app.store.store import ModelStore
from app.store.watch import refresh_store


def autoencoder(length: int = 8) -> keras.Model:
    inputs = keras.Input((length,))
    return keras.Model(inputs, keras.layers.Dense(length)(keras.layers.Dense(3)(inputs)))


def anomaly_manifest(**changes) -> Manifest:
    fields = {"name": "ecg", "version": 1, "task": "anomaly", "created_at": "now", "input_spec": {"shape": [8]},
              "preprocessing": {"kind": "standardise", "mean": 0.1, "std": 2.0}, "threshold": 0.5}
    return Manifest.model_validate({**fields, **changes})


def test_a_sound_anomaly_manifest_is_accepted():
    check_version(anomaly_manifest(), autoencoder())


@pytest.mark.parametrize(("changes", "reason"), [
    ({"threshold": -1}, "threshold must be a positive finite number, not -1"),
    ({"threshold": 0}, "threshold must be a positive finite number, not 0"),
    ({"threshold": "abc"}, "not 'abc'"),
    ({"threshold": None}, "not None"),
    ({"preprocessing": {}}, "record preprocessing must be"),
    ({"preprocessing": {"kind": "standardise", "mean": 0.0, "std": 0.0}}, "std must be a positive finite number"),
    ({"preprocessing": {"kind": "standardise", "mean": "x", "std": 1.0}}, "mean must be a finite number"),
    ({"input_spec": {"shape": [9]}}, "must output its input's shape (9,), not (8,)"),
])
def test_an_anomaly_manifest_that_would_fail_every_request_is_refused(changes, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_version(anomaly_manifest(**changes), autoencoder())


def test_a_detector_manifest_needs_its_tiling_fields():
    inputs = keras.Input((16, 16, 3))
    detector = keras.Model(inputs, keras.layers.Conv2D(5, 1)(inputs))
    fields = {"name": "trees", "version": 1, "task": "detect", "created_at": "now", "input_spec": {"shape": [16, 16, 3]}}
    with pytest.raises(ValueError, match="needs its 'detection' fields"):
        check_version(Manifest.model_validate(fields), detector)
    with pytest.raises(ValueError, match="lacks stride, nms_iou"):
        check_version(Manifest.model_validate({**fields, "detection": {"tile": 16, "overlap": 0, "score_threshold": 0.3}}),
                      detector)


def test_refreshes_run_one_at_a_time_and_wait_on_the_event_loop(tmp_path):
    """Twenty concurrent reloads occupy one worker thread at a time, not twenty."""
    store = ModelStore(tmp_path, "/CPU:0")
    running, most = 0, 0
    guard = threading.Lock()

    def slow_refresh(name=None, force=False):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with guard:
            running -= 1
        return {"loaded": [], "refused": [], "unloaded": []}

    store.refresh = slow_refresh

    async def twenty() -> None:
        await asyncio.gather(*(refresh_store(store) for _ in range(20)))

    asyncio.run(twenty())
    assert most == 1
