"""Every bad input gets a JSON 4xx naming the problem, and the service keeps serving."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.middleware import BodyLimitMiddleware
from tests.conftest import make_settings, png_bytes, template_image
from tests.test_images import scan_bomb


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def post(client, data: bytes, query: str = "", name: str = "x.png"):
    return client.post(f"/classify{query}", files={"file": (name, data, "image/png")})


def assert_error(response, status: int, words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert words in body["detail"], body["detail"]
    return body


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 422, "empty"),
        (b"hello, this is text", 422, "not an image"),
        (png_bytes(Image.new("L", (64, 64), 255))[:60], 422, "truncated"),
        (huge_png(100_000, 100_000), 413, "over the limit"),
        (png_bytes(Image.new("L", (40, 40), 255)), 422, "no digit found"),
        (scan_bomb(2000, 101), 422, "a JPEG with over 100 scans"),
    ],
    ids=["empty", "not-image", "truncated", "decompression-bomb", "blank", "jpeg-scan-bomb"],
)
def test_bad_images_are_clear_4xx(client, data, status, words):
    assert_error(post(client, data), status, words)
    assert post(client, template_image(5)).status_code == 200  # still serving


def test_a_truncated_real_image_is_422(client):
    photo = png_bytes(Image.effect_noise((200, 200), 60).convert("L"), "JPEG")
    assert_error(post(client, photo[: len(photo) // 2]), 422, "truncated")


def test_unknown_model_and_version_are_404(client):
    assert_error(post(client, template_image(1), "?model=nope"), 404, "unknown model 'nope'")
    assert_error(post(client, template_image(1), "?version=9"), 404, "no version 9")


def test_missing_file_field_is_422(client):
    body = assert_error(client.post("/classify", files={"other": ("x.png", b"x")}), 422, "file")
    assert body["errors"][0]["loc"][-1] == "file"


def test_k_out_of_range_is_422(client):
    assert_error(post(client, template_image(1), "?k=0"), 422, "k")
    assert_error(post(client, template_image(1), "?k=1000"), 422, "less than or equal to 100 (the MAX_K setting)")


@pytest.mark.parametrize("written", ["1_0", "10.0", " 10", "ten"])
def test_an_integer_parameter_must_be_written_in_digits(client, written):
    body = assert_error(post(client, template_image(1), f"?k={written}"), 422, "query.k: Input should be a number "
                        "written in digits, like 10")
    assert body["errors"][0]["type"] == "number_parsing"
    assert client.get(f"/similar-words?word=king&version={written}").status_code == 422
    assert_error(client.get(f"/runs?limit={written}"), 422, "query.limit: Input should be a number written in digits")


def test_a_decimal_parameter_is_written_in_digits_or_an_exponent(client):
    assert_error(client.post("/anomaly?threshold=1_0.5", json={"records": [[0.0]]}), 422,
                 "query.threshold: Input should be a number written in digits, like 0.25 or 1e-3")
    assert client.get("/runs?limit=%2B5").status_code == 200


def test_an_integer_parameter_may_carry_a_sign(client):
    answer = post(client, template_image(1), "?k=%2B2")  # a bare "+" is a space in a query string
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["top"]) == 2


def test_bad_file_in_a_batch_is_named(client):
    files = [("file", ("ok.png", template_image(1))), ("file", ("bad.png", b"junk"))]
    assert_error(client.post("/classify", files=files), 422, "file 2 ('bad.png')")


def test_upload_over_the_size_limit_is_413(tmp_path, trained_settings):
    settings = trained_settings.model_copy(update={"MAX_UPLOAD_BYTES": 1000})
    with TestClient(create_app(settings)) as small:
        big = png_bytes(Image.effect_noise((100, 100), 80).convert("L"))
        assert_error(post(small, big), 413, "upload limit")
        assert small.get("/health").status_code == 200


def test_body_over_the_request_limit_is_413(trained_settings):
    settings = trained_settings.model_copy(update={"MAX_BODY_BYTES": 2000})
    with TestClient(create_app(settings)) as small:
        body = assert_error(post(small, b"\0" * 5000), 413, "request body")
        assert body["request_id"] and len(body["request_id"]) == 32


def multipart_body(size: int) -> tuple[bytes, bytes]:
    boundary = b"limitboundary"
    head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    return head + b"\0" * size, b"multipart/form-data; boundary=" + boundary


def answer_to(app, body_chunks: list[bytes], content_type: bytes, stall: bool) -> tuple[int, dict]:
    """Call the ASGI app directly with a chunked upload (no Content-Length), as a client streaming
    the body would; with `stall`, the client goes quiet after its chunks."""
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in body_chunks]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/classify", "raw_path": b"/classify", "query_string": b"",
             "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")],
             "http_version": "1.1", "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "root_path": "", "app": app}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_a_streamed_upload_over_the_limit_or_stalling_gets_413_or_408_not_the_parsers_400(trained_settings):
    """FastAPI's form parsing turns any error while reading the body into its own vague 400; the
    limits' answers must reach the client instead."""
    settings = trained_settings.model_copy(update={"MAX_BODY_BYTES": 2000, "BODY_READ_TIMEOUT_S": 0.2})
    app = create_app(settings)
    body, content_type = multipart_body(5000)
    status, answer = answer_to(app, [body[:1000], body[1000:3000], body[3000:]], content_type, stall=False)
    assert (status, answer["detail"]) == (413, "request body over the limit of 2000 bytes")
    status, answer = answer_to(app, [body[:500]], content_type, stall=True)
    assert (status, answer["detail"]) == (408, "the request body stalled for over 0.2 s")


@pytest.mark.parametrize("handling", ["raises another error", "answers nothing"])
def test_the_limit_is_answered_whatever_the_app_makes_of_its_error(handling):
    async def app(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception as error:
            if handling == "raises another error":
                raise RuntimeError("wrapped") from error

    limited = BodyLimitMiddleware(app, max_bytes=2000, read_timeout=0.2)
    body, content_type = multipart_body(5000)
    assert answer_to(limited, [body[:3000], body[3000:]], content_type, stall=False)[0] == 413
    assert answer_to(limited, [body[:500]], content_type, stall=True)[0] == 408


def test_a_wrong_method_is_405_with_the_allowed_ones(client):
    response = client.get("/classify")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["detail"] == "Method Not Allowed"


def test_no_models_means_404_not_500(tmp_path):
    with TestClient(create_app(make_settings(tmp_path))) as empty:
        assert_error(post(empty, template_image(1)), 404, "unknown model")
        assert empty.get("/models").json() == {"data": [], "count": 0}


def test_gif_webp_bmp_and_modes_are_accepted(client):
    transparent = Image.new("RGBA", (50, 50), (0, 0, 0, 0))  # black ink on a transparent canvas
    transparent.paste((0, 0, 0, 255), (20, 10, 28, 40))
    paper = Image.new("RGB", (50, 50), (250, 250, 250))
    paper.paste((10, 10, 10), (20, 10, 28, 40))
    cases = {"PNG": transparent, "WEBP": transparent, "GIF": paper.convert("P"), "BMP": paper.convert("1")}
    for fmt, image in cases.items():
        response = post(client, png_bytes(image, fmt), name=f"x.{fmt.lower()}")
        assert response.status_code == 200, (fmt, response.text)
    sixteen = Image.fromarray((np.eye(30) * 60000).astype(np.uint16))
    assert post(client, png_bytes(sixteen)).status_code == 200


def form_of(files: list[bytes], boundary: bytes = b"cutboundary") -> tuple[bytes, str]:
    """A multipart/form-data body of `files` in the 'file' field, closed by its final boundary."""
    parts = b"".join(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                     b"Content-Type: image/png\r\n\r\n" + data + b"\r\n" for data in files)
    return parts + b"--" + boundary + b"--\r\n", f"multipart/form-data; boundary={boundary.decode()}"


def test_a_multipart_body_cut_short_is_400_naming_it(client):
    """python-multipart drops the part it was reading when a body ends early: one file was "Field
    required", and of two files the second vanished and the first was answered alone."""
    digit = template_image(3)
    for files in ([digit], [digit, digit]):
        body, content_type = form_of(files)
        cut = body[:len(body) - len(digit) // 2 - 40]
        response = client.post("/classify", content=cut, headers={"Content-Type": content_type})
        assert_error(response, 400, "the multipart body ends without its closing boundary '--cutboundary--'")
        assert client.post("/classify", content=body, headers={"Content-Type": content_type}).status_code == 200
    empty = client.post("/classify", content=b"", headers={"Content-Type": content_type})
    assert_error(empty, 400, "cut short (or is empty)")
    assert client.get("/health").status_code == 200


def test_a_closing_boundary_split_across_chunks_or_followed_by_an_epilogue_is_whole():
    """The closing boundary is looked for in the body's last bytes, across the chunks they came in;
    RFC 2046 lets an epilogue follow it."""
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    checked = BodyLimitMiddleware(app, max_bytes=1 << 20, read_timeout=1)
    body, content_type = form_of([template_image(3)])
    for chunks in ([body[:-10], body[-10:]], [body[:-1], body[-1:]], [body + b"an epilogue\r\n"]):
        assert answer_to(checked, chunks, content_type.encode(), stall=False)[0] == 200
    status, answer = answer_to(checked, [body[:-8], b""], content_type.encode(), stall=False)
    assert status == 400 and "cut short" in answer["detail"]
    quoted = content_type.replace("boundary=cutboundary", 'boundary="cutboundary"')
    assert answer_to(checked, [body], quoted.encode(), stall=False)[0] == 200


def test_an_upload_sent_as_a_text_field_is_told_to_send_a_file(client):
    """curl's `-F file=<path` (the file's content as text) and a part without a filename were a 422
    "Value error, Expected UploadFile, received: <class 'str'>"."""
    response = client.post("/classify", data={"file": "not a file"}, files={"other": ("x", b"", "text/plain")})
    body = assert_error(response, 422, "the 'file' part has no filename, so it is a text field, not a file")
    assert "curl -F file=@path" in body["detail"] and "class" not in body["detail"]
    starred = b"".join([
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.png\r\n\r\n",
        template_image(3), b"\r\n--b--\r\n"])
    response = client.post("/classify", content=starred, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(response, 422, "the 'file' part has no filename")

