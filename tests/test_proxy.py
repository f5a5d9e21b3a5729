"""deploy/nginx.conf in front of the app: what uvicorn answers in plain text or not at all (slow
clients, unreadable HTTP, oversized heads) gets the service's JSON error shape, and the service's own
answers pass through. Runs where an nginx binary is installed (`.ci/run` installs one)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import REPO_ROOT, Settings
from app.main import create_app
from tests.conftest import template_image

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)

SHIPPED_CONF = REPO_ROOT / "deploy" / "nginx.conf"
HEADER_DEADLINE_S = 1  # the test's, instead of the shipped 10 s
BODY_GAP_S = 1  # the test's, instead of the shipped 30 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def shipped_conf_for(app_port: int, proxy_port: int) -> str:
    """The shipped server block, pointed at the test's app and port, with 1-second deadlines."""
    conf = SHIPPED_CONF.read_text()
    for shipped, local in (("server api:8000;", f"server 127.0.0.1:{app_port};"),
                           ("listen 8080;", f"listen 127.0.0.1:{proxy_port};"),
                           ("client_header_timeout 10s;", f"client_header_timeout {HEADER_DEADLINE_S}s;"),
                           ("client_body_timeout 30s;", f"client_body_timeout {BODY_GAP_S}s;")):
        assert shipped in conf, shipped
        conf = conf.replace(shipped, local)
    return conf


def start_nginx(root: Path, server_block: str, port: int) -> subprocess.Popen:
    """nginx in the foreground, one process, every path under `root`, serving `server_block`."""
    (root / "labnets.conf").write_text(server_block)
    temp_paths = "".join(f"{kind}_temp_path {root / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
        f"events {{ worker_connections 64; }}\nhttp {{\naccess_log off;\n{temp_paths}include {root / 'labnets.conf'};\n}}\n")
    nginx = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, seconds=10)
    except TimeoutError:
        nginx.kill()
        pytest.fail(f"nginx did not start: {nginx.communicate()[1].decode()}")
    return nginx


@pytest.fixture(scope="module")
def served(trained_settings, tmp_path_factory) -> Iterator[tuple[str, uvicorn.Server, Callable[[], None]]]:
    """The app under uvicorn with nginx in front: the proxy's URL, the server, and a way to stop it."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    app_port, proxy_port = free_port(), free_port()
    settings = trained_settings.model_copy(update={"EVENT_LOOP_CPU": -1, "RELOAD_INTERVAL_S": 0})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=app_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop_service() -> None:
        server.should_exit = True
        thread.join(30)

    try:
        wait_for_port(app_port)
        nginx = start_nginx(tmp_path_factory.mktemp("proxy"), shipped_conf_for(app_port, proxy_port), proxy_port)
        try:
            yield f"http://127.0.0.1:{proxy_port}", server, stop_service
        finally:
            nginx.terminate()
            nginx.wait(10)
    finally:
        stop_service()


def raw(url: str, request: bytes) -> bytes:
    """Send raw bytes (nothing an HTTP client library would send); read one answer, or b"" if the
    connection is closed without one."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            head, found, body = answer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if found and length is not None and len(body) >= length:
                break  # whole: nginx may linger before closing a connection whose body it refused
    return answer


def json_answer(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_the_service_answers_through_the_proxy_with_one_request_id(served, client):
    url, *_ = served
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and len(health.headers["x-request-id"]) == 32
    given = httpx.get(f"{url}/health", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    upload = {"file": ("7.png", template_image(7), "image/png")}
    through_proxy = httpx.post(f"{url}/classify", files=upload)
    assert through_proxy.status_code == 200
    assert through_proxy.json()["top"] == client.post("/classify", files=upload).json()["top"]


def test_the_services_own_errors_pass_through(served):
    url, *_ = served
    wrong_method = httpx.get(f"{url}/classify")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    unknown = httpx.post(f"{url}/classify", params={"model": "nope"}, files={"file": ("x.png", b"x", "image/png")})
    assert unknown.status_code == 404 and "unknown model" in unknown.json()["detail"]


@pytest.mark.parametrize(("request_bytes", "status", "words"), [
    (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "could not be read as HTTP"),
    (b"\x16\x03\x01\x02\x00\x01\x00", 400, "could not be read as HTTP"),  # TLS to a plain-HTTP port
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Null: a\x00b\r\n\r\n", 400, "could not be read as HTTP"),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URL is over 16 KB"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431, "header line is over 16 KB"),
    (b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 70000000\r\n\r\n", 413, "over the limit of 67108864"),
    (b"POST /classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "transfer encoding"),
    (b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1"),
    (b"GET /_labnets_errors/400 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not found"),
], ids=["lowercase-method", "tls", "nul-in-header", "long-url", "long-header", "declared-body-over-limit",
        "unknown-transfer-encoding", "http2-line", "the-proxy's-own-pages"])
def test_what_uvicorn_would_answer_in_plain_text_is_json(served, request_bytes, status, words):
    url, *_ = served
    got, headers, body = json_answer(raw(url, request_bytes))
    assert got == status and headers["content-type"] == "application/json"
    assert words in body["detail"] and len(body["request_id"]) == 32


def test_a_client_trickling_its_head_is_cut_off_at_the_deadline(served):
    """uvicorn waits for a request head as long as the client sends something; nginx gives it
    HEADER_DEADLINE_S in all, then closes the connection without troubling the service."""
    url, *_ = served
    port = int(url.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(int(HEADER_DEADLINE_S * 10) + 20):
            try:
                connection.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            connection.settimeout(0.1)
            try:
                if connection.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed and time.monotonic() - started < HEADER_DEADLINE_S + 2


def test_a_body_that_stalls_is_cut_off_and_never_reaches_the_service(served):
    """nginx reads the whole body before passing the request on: a stalled upload holds an nginx
    connection, not one of the service's, and is closed once it stalls longer than BODY_GAP_S."""
    url, server, _ = served
    before = server.server_state.total_requests
    request = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
    started = time.monotonic()
    assert raw(url, request + b"x" * 10) == b""
    assert time.monotonic() - started < BODY_GAP_S + 2
    assert server.server_state.total_requests == before


def test_the_service_down_is_a_json_503(served):
    """Last: it stops the service."""
    url, _, stop_service = served
    stop_service()
    answer = httpx.get(f"{url}/health")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["detail"] == "the service is not answering; try again shortly"


def test_the_proxys_body_limit_is_the_services():
    """Two places hold the limit: nginx refuses first, in the service's words and number."""
    limit = Settings.model_fields["MAX_BODY_BYTES"].default
    conf = SHIPPED_CONF.read_text()
    assert f"client_max_body_size {limit // 2**20}m;" in conf
    assert f"request body over the limit of {limit} bytes" in conf
