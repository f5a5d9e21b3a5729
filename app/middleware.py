"""ASGI middleware: a request id on every request, HEAD on GET routes, limits on the request body,
JSON answers to refused CORS preflights, request metrics."""

from __future__ import annotations

import itertools
import json
import os
import time

import anyio
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ApiError, BadRequest, RequestTimeout, TooLarge
from app.logs import request_id_var
from app.serving import metrics

REQUEST_ID_HEADER = b"x-request-id"
# Request ids: a random per-process prefix and a counter; unique, and far cheaper than uuid4 per request.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):020x}"


def _is_sane_request_id(given: str) -> bool:
    """1 to 64 ASCII letters, digits and dashes: str.isalnum() alone takes ², µ, À..., which would be
    echoed re-encoded as UTF-8, not as the bytes the client sent."""
    return 0 < len(given) <= 64 and given.isascii() and given.replace("-", "0").isalnum()


class RequestIdMiddleware:
    """Take the caller's X-Request-ID (if sane) or make one; echo it in the response and logs."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if _is_sane_request_id(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class HeadMiddleware:
    """Answer HEAD on every GET route as GET without the body.

    FastAPI's APIRoute, unlike Starlette's Route, never adds HEAD to a GET route. One middleware
    covers every router, present and future, and leaves the OpenAPI schema alone (HEAD on the routes
    themselves would add a `head` operation per GET route there, and a route class on every router).
    A HEAD runs the GET handler, so its status and headers, content-length included, are GET's; a
    HEAD on a POST-only route meets that route's 405 as a GET would. Any other method passes
    straight through, at the cost of one comparison (a 405's `Allow` gains HEAD in its handler).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_without_body(message: Message) -> None:
            if message["type"] in BODY_MESSAGES:
                if message.get("more_body", False):
                    return  # only the last body message is sent, empty
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


# What can carry a response body: the plain message and the zero-copy and path-send extensions.
BODY_MESSAGES = ("http.response.body", "http.response.zerocopysend", "http.response.pathsend")


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS policy, but a refused preflight gets the service's JSON error shape.

    Starlette answers it with a text/plain 400 "Disallowed CORS origin, method"; which origins,
    methods and headers pass stays Starlette's decision, read from that answer, and only the body
    changes: a detail naming what was refused, and the request id.
    """

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ").split(", ")
        detail = "CORS preflight refused: " + "; ".join(self._refusal(part, request_headers) for part in refused)
        headers = {name: value for name, value in response.headers.items()
                   if name not in ("content-length", "content-type")}  # the CORS ones stay
        return JSONResponse({"detail": detail, "request_id": request_id_var.get()}, 400, headers)

    def _refusal(self, part: str, request_headers: Headers) -> str:
        if part == "origin":
            return f"origin {request_headers['origin']!r} is not allowed"
        if part == "method":
            allowed = ", ".join(self.allow_methods)
            return f"method {request_headers['access-control-request-method']!r} is not allowed (allowed: {allowed})"
        if part == "headers":
            asked = [name.strip() for name in request_headers.get("access-control-request-headers", "").split(",")]
            return f"request headers {', '.join(n for n in asked if n.lower() not in self.allow_headers)} are not allowed"
        if part == "private-network":
            return "private-network access is not allowed"
        return part


# How far before a multipart body's end its closing boundary may lie (an epilogue after it is allowed).
MULTIPART_TAIL_BYTES = 512


def multipart_cut_short(content_type: bytes, tail: bytes) -> BadRequest | None:
    """The error for a multipart body whose `tail` (last bytes) lacks the closing boundary, or None.

    python-multipart ends such a body without complaint and drops the part it was reading, so the
    route saw "Field required", or one file fewer than was sent and answered the rest."""
    guess = content_type.partition(b"boundary=")[2].split(b";")[0].strip(b' "')
    if guess and b"--" + guess + b"--" in tail:  # the usual case: 2 µs instead of 7 for a full parse
        return None
    media, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not media.startswith(b"multipart/") or not boundary or b"--" + boundary + b"--" in tail:
        return None
    return BadRequest(f"the multipart body ends without its closing boundary '--{boundary.decode('latin-1')}--': "
                      "it was cut short (or is empty)")


def body_encoding(headers: dict[bytes, bytes]) -> str | None:
    """The Content-Encoding of a request body, or None for none, identity or no body: nothing here
    decompresses, so a gzip body was read as text and refused as "not valid JSON: 'utf-8' codec..."."""
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    if encoding in (b"", b"identity") or (headers.get(b"content-length", b"0") == b"0"
                                          and b"transfer-encoding" not in headers):
        return None
    return encoding.decode("latin-1")


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` (413), bodies that stall longer than `read_timeout` (408),
    compressed bodies (415), and multipart bodies that end before their closing boundary (400).

    The declared Content-Length is checked before reading anything; chunked bodies are counted
    as they arrive, so no body larger than the limit is ever held in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send, 413, self._too_large_detail())
        if (encoding := body_encoding(headers)) is not None:
            return await self._reject(send, 415, f"Content-Encoding {encoding!r} is not supported: send the body "
                                                 "uncompressed")
        content_type = headers.get(b"content-type", b"")
        multipart = content_type[:10].lower() == b"multipart/"
        received = 0
        tail = b""
        started = False
        failure: ApiError | None = None

        async def limited_receive() -> Message:
            nonlocal received, failure, tail
            with anyio.move_on_after(self.read_timeout) as scope_timeout:
                message = await receive()
            error: ApiError | None = None
            if scope_timeout.cancelled_caught:
                error = RequestTimeout(f"the request body stalled for over {self.read_timeout:g} s")
            elif message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    error = TooLarge(self._too_large_detail())
                elif multipart:
                    tail = (tail + chunk[-MULTIPART_TAIL_BYTES:])[-MULTIPART_TAIL_BYTES:]
                    if not message.get("more_body", False):
                        error = multipart_cut_short(content_type, tail)
            if error is not None:
                failure = failure or (None if started else error)  # an answer already begun is left alone
                raise error
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if failure is not None:
                # The app caught the limit's error and answers on its own (FastAPI's form parsing
                # turns any error into a 400 "There was an error parsing the body"): the client
                # gets the body's own 400, 408 or 413 instead.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, failure.status_code, failure.detail)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as error:
            limit = failure or (error if isinstance(error, (TooLarge, RequestTimeout, BadRequest)) else None)
            if limit is None:
                raise
            # The body broke a limit; whatever the app made of that (its own error, another
            # exception wrapping it), the client is told the limit, if nothing was answered yet.
            if not started:
                await self._reject(send, limit.status_code, limit.detail)
            return
        if failure is not None and not started:  # the app swallowed the limit's error and answered nothing
            await self._reject(send, failure.status_code, failure.detail)

    def _too_large_detail(self) -> str:
        return f"request body over the limit of {self.max_bytes} bytes"

    @staticmethod
    async def _reject(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail, "request_id": request_id_var.get()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Count and time every request by route template, model and status, for /metrics."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            model = self._model_label(scope)
            metrics.REQUESTS.labels(endpoint, model, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint, model).observe(time.perf_counter() - started)

    @staticmethod
    def _model_label(scope: Scope) -> str:
        """The model that served the request, as its handler recorded it once the query was read
        (the route's default when none was named; the last value of a repeated `model`), if the
        store knows it, else "other": labels must stay few. "" when no model was chosen (/health,
        a request refused before its query was read)."""
        served = scope.get("state", {}).get(metrics.SERVED_MODEL)
        if not served:
            return ""
        store = getattr(scope["app"].state, "store", None)
        return served if store is not None and served in store.loaded else "other"
