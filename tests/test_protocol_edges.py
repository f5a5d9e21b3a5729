"""Protocol edges: HEAD on GET routes, 405s, refused CORS preflights, multipart errors, wrong content types,
Range headers and request ids: each a JSON error of the service's shape, never plain text."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE

from app.api.docs import PREFIX
from app.main import create_app
from app.middleware import RequestIdMiddleware
from tests.conftest import make_settings, template_image
from tests.test_bad_input import assert_error, post
from tests.test_ecg import ecg_args, synthetic_split
from training.ecg import train_on

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
        ("https://a.example", "PUT", "method 'PUT' is not allowed (allowed: GET, HEAD, POST, PATCH, DELETE)"),
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


def test_405_allow_lists_every_route_on_the_path(client):
    """PATCH and DELETE are two routes on /admin/runs/{id}; Starlette names only the first."""
    response = client.put("/admin/runs/ff")
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "DELETE, PATCH"
    assert client.post(f"{PREFIX}/favicon.png").headers["allow"] == "GET, HEAD"  # StaticFiles' own 405


@pytest.fixture(scope="module")
def ecg_client(tmp_path_factory) -> TestClient:
    """A store holding a tiny ECG autoencoder, for /anomaly (one epoch: only its errors are tested)."""
    settings = make_settings(tmp_path_factory.mktemp("ecg"))
    data = {"train": synthetic_split(40, 8, 1), "validation": synthetic_split(20, 20, 2),
            "test": synthetic_split(20, 20, 3)}
    train_on(data, ecg_args(epochs=1), settings, dataset="synthetic", data_fingerprint="test")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_anomaly_explains_a_multipart_error_as_classify_does(client, ecg_client):
    files = {"file": ("a" * 5000 + ".csv", b"0.5\n", "text/csv")}
    classify = assert_error(client.post("/classify", files=files), 400, "a multipart part has a header line")
    anomaly = assert_error(ecg_client.post("/anomaly", files=files), 400, "a multipart part has a header line")
    assert anomaly["detail"] == classify["detail"]
    body, headers = multipart(b"Bad Header: v\r\n")
    assert_error(ecg_client.post("/anomaly", content=body, headers=headers), 400,
                 "invalid multipart data: Found invalid character")


@pytest.mark.parametrize("path", ["/classify", "/detect"])
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"json": {"file": "x"}}, "content type 'application/json'"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, "content type 'text/plain'"),
        ({"content": b"x", "headers": {"content-type": "multipart/mixed; boundary=b"}}, "'multipart/mixed'"),
        ({"content": b""}, "no content type"),
    ],
    ids=["json", "text", "multipart-mixed", "none"],
)
def test_an_image_route_names_a_body_that_is_not_multipart(client, path, kwargs, named):
    body = assert_error(client.post(path, **kwargs), 415, named)
    assert body["detail"].endswith("send multipart/form-data with the image(s) in the 'file' field")


def test_a_urlencoded_form_is_told_it_cannot_carry_files(client):
    for form in ({"file": "x"}, {"other": "x"}):  # no Python repr of the value either
        assert_error(client.post("/classify", data=form), 415, "content type 'application/x-www-form-urlencoded': "
                     "send multipart/form-data with the image(s) in the 'file' field")


def test_a_multipart_body_without_the_file_field_stays_422(client):
    body = assert_error(client.post("/classify", files={"other": ("a.png", template_image(1))}), 422,
                        "body.file: Field required")
    assert body["errors"][0]["loc"] == ["body", "file"]


def plot_url(client) -> str:
    run = client.get("/runs").json()["data"][0]
    return client.get(f"/runs/{run['id']}").json()["plot_urls"][0]


@pytest.mark.parametrize("where", ["plot", "asset"])
def test_a_bad_range_is_a_json_error(client, where):
    url = plot_url(client) if where == "plot" else f"{PREFIX}/favicon.png"
    size = len(client.get(url).content)
    malformed = client.get(url, headers={"Range": "bytes=garbage", "X-Request-ID": "range-1"})
    assert malformed.headers["content-type"] == "application/json"
    body = assert_error(malformed, 400, "Range header 'bytes=garbage': range must be requested; ask for bytes=")
    assert body["request_id"] == "range-1"
    assert_error(client.get(url, headers={"Range": "bytes=5-2"}), 400, "start must be less than end")
    past_end = client.get(url, headers={"Range": "bytes=99999999-"})
    assert_error(past_end, 416, f"a range starts past the end of the file ({size} bytes)")
    assert past_end.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("where", ["plot", "asset"])
def test_ranges_in_bytes_are_served_and_other_units_ignored(client, where):
    url = plot_url(client) if where == "plot" else f"{PREFIX}/favicon.png"
    whole = client.get(url).content
    part = client.get(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == whole[:4]
    other_unit = client.get(url, headers={"Range": "items=0-1"})
    assert other_unit.status_code == 200 and other_unit.content == whole


def request_id_echoed(raw: bytes) -> bytes:
    """The X-Request-ID the middleware answers a request carrying `raw` with, bytes as on the wire."""
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", raw)]}
    asyncio.run(RequestIdMiddleware(app)(scope, None, send))
    return dict(sent[0]["headers"])[b"x-request-id"]


@pytest.mark.parametrize("raw", ["\u00b2", "\u00aa", "\u00b5", "caf\u00e9", "\u00c0-\u00ff"])
def test_a_request_id_outside_ascii_is_replaced(raw):
    """Header bytes are read as latin-1, where ², ª, µ, À..ÿ pass str.isalnum()."""
    echoed = request_id_echoed(raw.encode("latin-1"))
    assert echoed.isascii() and echoed != raw.encode("latin-1") and len(echoed) == 32


@pytest.mark.parametrize("raw", [b"Job-42-abc", b"-", b"--", b"x" * 64])
def test_an_ascii_request_id_is_echoed_as_sent(raw):
    """Letters, digits and dashes, 1 to 64 of them, as the README says: "-" alone was replaced."""
    assert request_id_echoed(raw) == raw


def test_the_form_parsers_limits_are_413s_in_the_services_words(client, ecg_client):
    many = [("file", (f"{i}.png", b"x")) for i in range(1001)]
    assert_error(client.post("/classify", files=many), 413, "more than 1000 files in the form")
    csv_files = [("file", (f"{i}.csv", b"0.5")) for i in range(40)]
    assert_error(ecg_client.post("/anomaly", files=csv_files), 413, "more than 32 files in the form")
    fields = {f"f{i}": "x" for i in range(1001)}
    assert_error(client.post("/classify", data=fields, files={"file": ("a.png", template_image(1))}), 413,
                 "more than 1000 fields in the form")
    field = {"note": "x" * (1024 * 1024 + 1)}
    assert_error(client.post("/classify", data=field, files={"file": ("a.png", template_image(1))}), 413,
                 "a form field over 1024 KB (a file goes in a file part")


def test_a_urlencoded_body_over_the_parsers_limits_is_still_the_wrong_content_type(client):
    assert_error(client.post("/classify", data={f"f{i}": "x" for i in range(1001)}), 415,
                 "content type 'application/x-www-form-urlencoded': send multipart/form-data")


def test_a_trailing_slash_redirects_to_a_relative_url(client):
    """Starlette's redirect named the Host header in an absolute URL: `Host: evil.example` got
    `location: http://evil.example/health`."""
    for path, location in (("/health/", "/health"), ("/runs/?limit=1", "/runs?limit=1")):
        response = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == location, path
    assert client.get("/health/", follow_redirects=True).json()["status"] == "ok"
    missing = client.get("/nowhere/", follow_redirects=False)
    assert missing.status_code == 404 and missing.json()["detail"] == "Not Found"
    assert client.post("/classify/", follow_redirects=False).headers["location"] == "/classify"
