"""Admin key, hot reload (admin call and watcher), CORS and JSON logs."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.logs import configure_logging
from app.main import create_app
from tests.conftest import template_image

KEY = "s3cret-key"


def copy_version(model_dir, source: int, target: int) -> None:
    folder = model_dir / "digits" / str(target)
    shutil.copytree(model_dir / "digits" / str(source), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = target
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def own_store(tmp_path, trained_settings):
    """A private copy of the trained store, so versions can be added and broken."""
    model_dir = tmp_path / "models"
    shutil.copytree(trained_settings.MODEL_DIR, model_dir)
    return trained_settings.model_copy(update={"MODEL_DIR": model_dir, "DATA_DIR": tmp_path / "data",
                                               "ADMIN_API_KEY": SecretStr(KEY), "RELOAD_INTERVAL_S": 0})


def classify(client, version: int | None = None):
    query = f"?version={version}" if version else ""
    return client.post(f"/classify{query}", files={"file": ("a.png", template_image(3))})


def test_admin_endpoints_are_closed_without_a_configured_key(client):
    response = client.post("/admin/models/reload", headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "ADMIN_API_KEY" in response.json()["detail"]


def test_admin_key_is_required_and_checked(own_store):
    with TestClient(create_app(own_store)) as client:
        assert client.post("/admin/models/reload").status_code == 401
        assert client.post("/admin/models/reload", headers={"X-API-Key": "wrong"}).status_code == 401
        ok = client.post("/admin/models/reload", headers={"X-API-Key": KEY})
        assert ok.status_code == 200 and ok.json() == {"loaded": [], "refused": [], "unloaded": []}


def test_a_new_version_is_swapped_in_and_a_corrupt_one_refused(own_store):
    with TestClient(create_app(own_store)) as client:
        assert classify(client).json()["version"] == 1
        copy_version(own_store.MODEL_DIR, 1, 2)
        copy_version(own_store.MODEL_DIR, 1, 3)
        (own_store.MODEL_DIR / "digits/3/model.keras").write_bytes(b"corrupt")
        report = client.post("/admin/models/digits/reload", headers={"X-API-Key": KEY}).json()
        assert report == {"loaded": ["digits/2"], "refused": ["digits/3"], "unloaded": []}
        assert classify(client).json()["version"] == 2
        assert classify(client, 1).json()["version"] == 1
        digits = client.get("/models").json()["data"][0]
        assert digits["served_version"] == 2
        refused = [v for v in digits["versions"] if v["status"] == "refused"]
        assert refused[0]["version"] == 3 and "sha256" in refused[0]["error"]
        assert 'labnets_model_load_seconds{model="digits",version="2"}' in client.get("/metrics").text
        shutil.rmtree(own_store.MODEL_DIR / "digits/2")
        report = client.post("/admin/models/reload", headers={"X-API-Key": KEY}).json()
        assert report["unloaded"] == ["digits/2"]
        assert 'labnets_model_load_seconds{model="digits",version="2"}' not in client.get("/metrics").text
        assert classify(client).json()["version"] == 1
        assert client.post("/admin/models/nope/reload", headers={"X-API-Key": KEY}).status_code == 404


def test_a_version_whose_preparation_cannot_work_is_refused_when_it_loads(own_store):
    """An unknown preparation, or one that makes inputs the model cannot take, would fail every request."""
    with TestClient(create_app(own_store)) as client:
        for version, preprocessing in ((2, {"kind": "nope"}), (3, {"kind": "resized", "size": [32, 32], "colour_mode": "grayscale"})):
            copy_version(own_store.MODEL_DIR, 1, version)
            manifest_path = own_store.MODEL_DIR / f"digits/{version}/manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["preprocessing"] = preprocessing
            manifest_path.write_text(json.dumps(manifest))
        report = client.post("/admin/models/digits/reload", headers={"X-API-Key": KEY}).json()
        assert report["refused"] == ["digits/2", "digits/3"]
        errors = {v["version"]: v["error"] for v in client.get("/models").json()["data"][0]["versions"] if v.get("error")}
        assert "unknown image preprocessing kind 'nope'" in errors[2]
        assert "makes inputs of shape (32, 32, 1), the model takes (28, 28)" in errors[3]
        assert classify(client).json()["version"] == 1


def test_a_version_that_disagrees_with_its_network_is_refused_and_retried_once_fixed(own_store):
    """Labels that do not match the outputs, or another task's manifest, would fail every request."""
    def edit(version: int, **fields) -> None:
        path = own_store.MODEL_DIR / f"digits/{version}/manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))

    with TestClient(create_app(own_store)) as client:
        copy_version(own_store.MODEL_DIR, 1, 2)
        copy_version(own_store.MODEL_DIR, 1, 3)
        edit(2, labels=["0", "1", "2"])
        edit(3, task="anomaly", threshold=0.1)
        shutil.copytree(own_store.MODEL_DIR / "digits/1", own_store.MODEL_DIR / "digits/\u00b2")  # '²': not a version
        report = client.post("/admin/models/reload", headers={"X-API-Key": KEY}).json()
        assert report == {"loaded": [], "refused": ["digits/2", "digits/3"], "unloaded": []}
        errors = {v["version"]: v["error"] for v in client.get("/models").json()["data"][0]["versions"] if v.get("error")}
        assert "the manifest names 3 labels but the network outputs (10,)" in errors[2]
        assert "an autoencoder must output its input's shape (28, 28), not (10,)" in errors[3]
        assert classify(client).json()["version"] == 1
        edit(2, labels=[str(d) for d in range(10)])  # fixed: a plain reload (the watcher's) tries it again
        report = client.post("/admin/models/reload", headers={"X-API-Key": KEY}).json()
        assert report == {"loaded": ["digits/2"], "refused": [], "unloaded": []}
        assert classify(client).json()["version"] == 2


def test_a_model_with_only_refused_versions_leaves_the_list_when_its_folder_goes(own_store):
    with TestClient(create_app(own_store)) as client:
        shutil.copytree(own_store.MODEL_DIR / "digits", own_store.MODEL_DIR / "broken")  # manifest says digits
        client.post("/admin/models/reload", headers={"X-API-Key": KEY})
        assert "broken" in [m["name"] for m in client.get("/models").json()["data"]]
        shutil.rmtree(own_store.MODEL_DIR / "broken")
        client.post("/admin/models/reload", headers={"X-API-Key": KEY})
        assert [m["name"] for m in client.get("/models").json()["data"]] == ["digits"]


def test_reloading_under_load_fails_no_request(own_store):
    with TestClient(create_app(own_store)) as client:
        statuses: list[int] = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                statuses.append(classify(client).status_code)

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for worker in workers:
            worker.start()
        for _ in range(5):
            assert client.post("/admin/models/reload?force=true", headers={"X-API-Key": KEY}).status_code == 200
        stop.set()
        for worker in workers:
            worker.join()
    assert statuses and set(statuses) == {200}


def test_the_watcher_picks_up_a_new_version(own_store):
    settings = own_store.model_copy(update={"RELOAD_INTERVAL_S": 0.2})
    with TestClient(create_app(settings)) as client:
        copy_version(settings.MODEL_DIR, 1, 2)
        deadline = time.time() + 20
        while time.time() < deadline and client.get("/models").json()["data"][0]["served_version"] != 2:
            time.sleep(0.2)
        assert classify(client).json()["version"] == 2


def test_deleting_a_run_needs_the_key(own_store):
    with TestClient(create_app(own_store)) as client:
        run_id = client.get("/runs").json()["data"][0]["id"]
        assert client.delete(f"/admin/runs/{run_id}").status_code == 401
        assert client.delete(f"/admin/runs/{run_id}", headers={"X-API-Key": KEY}).status_code == 204
        assert client.get(f"/runs/{run_id}").status_code == 404
        assert client.delete(f"/admin/runs/{run_id}", headers={"X-API-Key": KEY}).status_code == 404


def test_cors_is_off_by_default_and_configurable(client, trained_settings):
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/classify", headers=preflight).headers
    settings = trained_settings.model_copy(update={"CORS_ORIGINS": ["https://a.example"]})
    with TestClient(create_app(settings)) as cors:
        response = cors.options("/classify", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://a.example"
        relabel = {**preflight, "Access-Control-Request-Method": "PATCH"}  # the admin run endpoints
        assert cors.options("/admin/runs/x", headers=relabel).status_code == 200
        head = {**preflight, "Access-Control-Request-Method": "HEAD"}  # every GET route answers HEAD
        assert cors.options("/models", headers=head).status_code == 200


def test_json_logs_carry_the_request_id(capsys):
    from app.logs import request_id_var

    configure_logging("INFO", "json")
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("labnets.test").info("hello")
    finally:
        request_id_var.reset(token)
        configure_logging("INFO", "text")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "hello" and entry["request_id"] == "req-42" and entry["level"] == "INFO"
