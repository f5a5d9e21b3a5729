"""Protocol edges: HEAD on GET routes, refused CORS preflights, multipart headers over the parser's limit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE

from app.api.docs import PREFIX
from app.main import create_app
from tests.conftest import template_image
from tests.test_bad_input import assert_error, post

# A static asset of over a megabyte: FileResponse sends it in many body messages.
LARGE_ASSET = f"{PREFIX}/swagger-ui-bundle.js"


@pytest.mark.parametrize(
    "path", ["/health", "/ready", "/models", "/runs", "/runs/abc", "/openapi.json", "/docs", LARGE_ASSET, "/nope"]
)
def test_head_answers_like_get_without_a_body(client, path):
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code
    assert head.content == b""
    for name in ("content-length", "content-type"):
        assert head.headers[name] == got.headers[name]
    assert "x-request-id" in head.headers


def test_head_on_metrics(client):
    """/metrics changes between two calls, so only its shape is compared."""
    head = client.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert head.headers["content-type"] == client.get("/metrics").headers["content-type"]


def test_405_lists_head_beside_get(client):
    response = client.post("/health")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert response.json()["detail"] == "Method Not Allowed"
    assert client.delete("/models").headers["allow"] == "GET, HEAD"


def test_head_on_a_post_only_route_is_405(client):
    response = client.head("/classify")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.content == b""
    assert client.get("/classify").headers["allow"] == "POST"  # no GET, so no HEAD either


@pytest.fixture(scope="module")
def cors_client(trained_settings) -> TestClient:
    settings = trained_settings.model_copy(update={"CORS_ORIGINS": ["https://a.example"]})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("origin", "method", "words"),
    [
        ("https://evil.example", "POST", "origin 'https://evil.example' is not allowed"),
        ("https://a.example", "PUT", "method 'PUT' is not allowed (allowed: GET, POST, PATCH, DELETE)"),
        ("https://evil.example", "PUT", "origin 'https://evil.example' is not allowed; method 'PUT'"),
    ],
    ids=["origin", "method", "both"],
)
def test_a_refused_cors_preflight_is_a_json_400(cors_client, origin, method, words):
    preflight = {"Origin": origin, "Access-Control-Request-Method": method, "X-Request-ID": "cors-1"}
    response = cors_client.options("/classify", headers=preflight)
    assert response.headers["content-type"] == "application/json"
    body = assert_error(response, 400, words)
    assert body["detail"].startswith("CORS preflight refused: ")
    assert body["request_id"] == response.headers["x-request-id"] == "cors-1"
    assert "Origin" in response.headers["vary"]  # Starlette's CORS headers are kept


def test_an_allowed_cors_preflight_is_unchanged(cors_client):
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    response = cors_client.options("/classify", headers=preflight)
    assert response.status_code == 200 and response.text == "OK"
    assert response.headers["access-control-allow-origin"] == "https://a.example"


def test_a_file_name_over_the_part_header_limit_is_named(client):
    long_name = "a" * 8000 + ".png"
    body = assert_error(post(client, template_image(1), name=long_name), 400, "a multipart part has a header line")
    assert f"over {DEFAULT_MAX_HEADER_SIZE} bytes" in body["detail"] and "file name" in body["detail"]
    assert post(client, template_image(1), name="a" * 2000 + ".png").status_code == 200  # under it: served


def multipart(part_headers: bytes) -> tuple[bytes, dict[str, str]]:
    body = b"--xyz\r\n" + part_headers + b"\r\nhi\r\n--xyz--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=xyz"}


def test_other_multipart_parse_errors_say_what_the_parser_found(client):
    disposition = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
    body, headers = multipart(b"".join(b"X-H%d: v\r\n" % i for i in range(9)) + disposition)
    assert_error(client.post("/classify", content=body, headers=headers), 400, "more than 8 headers")
    body, headers = multipart(b"Bad Header: v\r\n" + disposition)
    assert_error(client.post("/classify", content=body, headers=headers), 400,
                 "invalid multipart data: Found invalid character")
