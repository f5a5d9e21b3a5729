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


def keys_anywhere(node, names: set[str]) -> list[str]:
    """Every key of `names` anywhere in a JSON document, with the path to it."""
    if isinstance(node, dict):
        found = [key for key in node if key in names]
        return found + [f"{key}/{path}" for key, value in node.items() for path in keys_anywhere(value, names)]
    if isinstance(node, list):
        return [f"{index}/{path}" for index, value in enumerate(node) for path in keys_anywhere(value, names)]
    return []


def published_bounds(openapi: dict, path: str, name: str) -> dict:
    """A query parameter's bounds as published: its schema's and its non-null member's."""
    operation = next(iter(openapi["paths"][path].values()))
    schema = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    members = [schema, *[m for m in schema.get("anyOf", []) if m.get("type") != "null"]]
    keys = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "minItems", "maxItems"}
    return {key: value for member in members for key, value in member.items() if key in keys}


def test_openapi_publishes_every_bound_as_json_schema_does():
    """pydantic published WholeNumber/DecimalNumber bounds as `ge`/`le`, which JSON Schema tools ignore,
    the MAX_K and MAX_ANALOGY_TERMS settings not at all, and flip_views as 1-4 (3 is refused)."""
    from pathlib import Path

    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(Path("unused"), MAX_K=7, MAX_ANALOGY_TERMS=3, BENCHMARK_BASELINES=True)
    openapi = create_app(settings).openapi()
    assert keys_anywhere(openapi, {"ge", "le", "gt", "lt", "x-setting-bounds"}) == []
    for path in ("/classify", "/anomaly", "/similar-words", "/analogy", "/detect", "/baseline/records"):
        assert published_bounds(openapi, path, "version") == {"minimum": 1}, path
    for path in ("/classify", "/similar-words", "/analogy", "/baseline/upload", "/baseline/get"):
        assert published_bounds(openapi, path, "k") == {"minimum": 1, "maximum": 7}, path
    assert published_bounds(openapi, "/analogy", "positive") == {"minItems": 1, "maxItems": 3}
    assert published_bounds(openapi, "/analogy", "negative") == {"maxItems": 3}
    assert published_bounds(openapi, "/anomaly", "threshold") == {"minimum": 1e-12}
    assert published_bounds(openapi, "/detect", "score_threshold") == {"minimum": 0.0, "maximum": 1.0}
    assert published_bounds(openapi, "/detect", "flip_views") == {"enum": [1, 2, 4]}
    assert published_bounds(openapi, "/runs", "limit") == {"minimum": 1, "maximum": 100}
    assert published_bounds(openapi, "/runs", "offset") == {"minimum": 0, "maximum": 1_000_000}
    default = create_app(make_settings(Path("unused"))).openapi()  # each app publishes its own settings
    assert published_bounds(default, "/classify", "k") == {"minimum": 1, "maximum": 100}


def test_flip_views_is_checked_with_the_rest_of_the_query():
    """Published as 1, 2 or 4, and refused as such with the other bad parameters (3 passed the query's 1-4)."""
    import pytest
    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request

    from app.api.detect import DetectQuery
    from app.api.query import read_query

    request = Request({"type": "http", "query_string": b"flip_views=3&version=0"})
    with pytest.raises(RequestValidationError) as caught:
        read_query(request, DetectQuery)
    errors = {error["loc"]: error["msg"] for error in caught.value.errors()}
    assert errors == {("query", "flip_views"): "Input should be one of 1, 2, 4",
                      ("query", "version"): "Input should be greater than or equal to 1"}
    assert read_query(Request({"type": "http", "query_string": b"flip_views=2"}), DetectQuery).flip_views == 2


def test_openapi_json_serves_the_published_document(client):
    parameters = client.get("/openapi.json").json()["paths"]["/classify"]["post"]["parameters"]
    k = next(p["schema"] for p in parameters if p["name"] == "k")
    assert k["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 100}
