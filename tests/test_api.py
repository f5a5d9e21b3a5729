"""Every endpoint of the service, on a tiny trained digits model."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.preprocessing.mnist import prepare_digit
from app.store.manifest import read_manifest
from tests.conftest import make_settings, png_bytes, template_image, train_tiny_digits


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "models": ["digits"]}


def test_every_response_carries_a_request_id(client):
    assert len(client.get("/health").headers["x-request-id"]) == 32
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"


def test_models_lists_the_served_version(client):
    body = client.get("/models").json()
    assert body["count"] == 1
    digits = body["data"][0]
    assert digits["name"] == "digits" and digits["task"] == "classify"
    assert digits["served_version"] == 1
    assert digits["labels"] == [str(d) for d in range(10)]
    assert digits["input_spec"] == {"shape": [28, 28], "dtype": "float32"}
    assert digits["device"] == "/CPU:0"
    assert digits["versions"][0]["status"] == "loaded"
    assert digits["run_id"] and 0.0 <= digits["test_metrics"]["test_accuracy"] <= 1.0
    assert digits["batching"] == {"max_batch_size": 32, "max_delay_ms": 2.0, "max_in_flight": 4}  # the settings'
    assert isinstance(digits["batching"]["max_batch_size"], int)


def test_classify_matches_the_model_on_the_prepared_input(client):
    upload = template_image(3)
    response = client.post("/classify", files={"file": ("three.png", upload, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits" and body["version"] == 1
    assert len(body["top"]) == 10  # all classes when there are ten or fewer
    probabilities = [entry["probability"] for entry in body["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1.0) < 1e-4
    assert body["label"] == body["top"][0]["label"]
    model = client.app.state.store.get("digits").compiled.model
    expected = model(prepare_digit(Image.open(io.BytesIO(upload)))[None], training=False).numpy()[0]
    by_label = {entry["label"]: entry["probability"] for entry in body["top"]}
    assert np.allclose([by_label[str(d)] for d in range(10)], expected, atol=1e-5)


def test_classify_top_k_and_explicit_version(client):
    body = client.post("/classify?k=3&version=1", files={"file": ("a.png", template_image(1))}).json()
    assert len(body["top"]) == 3 and body["version"] == 1


def test_classify_several_files_answers_in_order(client):
    files = [("file", (f"{d}.png", template_image(d), "image/png")) for d in (4, 2, 7)]
    body = client.post("/classify", files=files).json()
    assert body["count"] == 3
    assert [p["filename"] for p in body["predictions"]] == ["4.png", "2.png", "7.png"]
    single = client.post("/classify", files={"file": ("2.png", template_image(2))}).json()
    assert body["predictions"][1]["label"] == single["label"]
    assert abs(body["predictions"][1]["top"][0]["probability"] - single["top"][0]["probability"]) < 1e-5


def test_runs_list_detail_and_plot(client):
    runs = client.get("/runs?model=digits").json()
    assert runs["count"] == 1
    run = runs["data"][0]
    assert run["status"] == "succeeded" and run["version"] == 1
    assert [row["epoch"] for row in run["history"]] == [1, 2]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(run["history"][0])
    assert run["params"]["hidden_units"] == 32 and run["seed"] == 1
    assert run["library_versions"]["keras"].startswith("3.")
    detail = client.get(f"/runs/{run['id']}").json()
    assert detail["plot_urls"] == [f"/runs/{run['id']}/plots/loss.png"]
    plot = client.get(detail["plot_urls"][0])
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_runs_paginate_and_filter(client):
    assert client.get("/runs?model=nothing").json() == {"data": [], "count": 0}
    assert client.get("/runs?limit=1&offset=5").json()["data"] == []
    assert client.get("/runs?limit=0").status_code == 422


def test_unknown_run_and_plot_are_404(client):
    assert client.get("/runs/deadbeef").status_code == 404
    run_id = client.get("/runs").json()["data"][0]["id"]
    assert client.get(f"/runs/{run_id}/plots/..%2F..%2Fmanifest.json").status_code == 404
    assert client.get(f"/runs/{run_id}/plots/secret.png").status_code == 404


def test_docs_render_from_local_assets(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "/docs-assets/" in html and "cdn" not in html and "googleapis" not in html
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
    assert "/classify" in client.get("/openapi.json").json()["paths"]


def test_a_photo_like_upload_in_jpeg(client):
    image = Image.new("RGB", (300, 200), (230, 225, 210))
    image.paste((20, 20, 30), (100, 40, 130, 160))
    response = client.post("/classify", files={"file": ("p.jpg", png_bytes(image, "JPEG"), "image/jpeg")})
    assert response.status_code == 200


def test_query_parameters_are_validated_by_one_model_and_documented(client):
    upload = {"file": ("x.png", template_image(4), "image/png")}
    body = client.post("/classify?k=0&version=x", files=upload).json()  # every bad parameter is named
    assert {tuple(e["loc"]) for e in body["errors"]} == {("query", "k"), ("query", "version")}
    assert "query.k: Input should be greater than or equal to 1" in body["detail"]
    over = client.post("/classify?k=101&version=x", files=upload)  # a limit from the settings, named with the rest
    assert over.status_code == 422
    assert {tuple(e["loc"]) for e in over.json()["errors"]} == {("query", "k"), ("query", "version")}
    assert "query.k: Input should be less than or equal to 100 (the MAX_K setting)" in over.json()["detail"]
    assert len(client.post("/classify?k=1&k=3&unknown=1", files=upload).json()["top"]) == 3  # the last value wins
    parameters = client.get("/openapi.json").json()["paths"]["/classify"]["post"]["parameters"]
    by_name = {p["name"]: p for p in parameters}
    assert set(by_name) == {"model", "version", "k"}
    assert by_name["model"]["schema"]["default"] == "digits" and not by_name["model"]["required"]
    assert by_name["k"]["description"] == "How many top classes to return."


def test_a_list_field_takes_every_value_of_a_repeated_parameter():
    from starlette.requests import Request

    from app.api.query import read_query
    from app.api.words import AnalogyQuery

    request = Request({"type": "http", "query_string": b"positive=king&positive=woman&negative=man&k=2&k=4"})
    query = read_query(request, AnalogyQuery)
    assert (query.positive, query.negative, query.k, query.model) == (["king", "woman"], ["man"], 4, "words")


def test_a_run_whose_version_folder_holds_another_runs_model_lists_no_plots(tmp_path):
    """Two runs recorded digits/1 (one published to another model store, as a version retrained in
    place would): each run's plot URL served the plot of whichever model the folder held."""
    served = make_settings(tmp_path / "served", DATA_DIR=tmp_path / "data")
    elsewhere = make_settings(tmp_path / "elsewhere", DATA_DIR=tmp_path / "data")
    train_tiny_digits(served)
    train_tiny_digits(elsewhere)
    with TestClient(create_app(served)) as client:
        runs = {run["id"]: run for run in client.get("/runs?model=digits").json()["data"]}
        current = read_manifest(served.MODEL_DIR / "digits" / "1").run_id
        other = next(run_id for run_id in runs if run_id != current)
        assert runs[current]["plot_urls"] == [f"/runs/{current}/plots/loss.png"]
        assert not runs[current]["artifact_replaced"]
        assert runs[other]["plot_urls"] == [] and runs[other]["artifact_replaced"]
        assert runs[other]["plots"] == ["loss.png"]  # what it recorded stays on record
        gone = client.get(f"/runs/{other}/plots/loss.png")
        assert gone.status_code == 404 and "now holds another run's model" in gone.json()["detail"]
        assert client.get(f"/runs/{current}/plots/loss.png").status_code == 200
