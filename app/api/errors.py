"""One JSON error shape for every failure; clients never see a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ApiError

log = logging.getLogger(__name__)


def _error(status: int, detail: str, request: Request, errors: list | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"detail": detail, "request_id": getattr(request.state, "request_id", None)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(status_code=status, content=body, headers=headers)


def _location(error: dict) -> str:
    return ".".join(str(part) for part in error.get("loc", ()))


def _multipart_detail(error: StarletteHTTPException) -> str | None:
    """What python-multipart found wrong with a body, or None if that is not why `error` was raised.

    Starlette turns every parser error into a 400 "Invalid multipart data."; the parser's reason
    survives only in the exception chain. Starlette builds the parser with python-multipart's
    default limits, so they are the ones to name.
    """
    cause: BaseException | None = error
    for _ in range(4):  # HTTPException <- starlette's MultiPartException <- the parser's error
        cause = cause.__cause__ or cause.__context__
        if cause is None or isinstance(cause, FormParserError):
            break
    if not isinstance(cause, FormParserError):
        return None
    reason = str(cause)
    if reason == "Maximum header size exceeded":
        return (f"a multipart part has a header line over {DEFAULT_MAX_HEADER_SIZE} bytes, the parser's limit "
                "(a file name that long?)")
    if reason == "Maximum header count exceeded":
        return f"a multipart part has more than {DEFAULT_MAX_HEADER_COUNT} headers, the parser's limit"
    return f"invalid multipart data: {reason}"


def allow_head(headers: dict[str, str] | None) -> dict[str, str] | None:
    """A 405's headers with HEAD beside GET in `Allow`: `HeadMiddleware` answers HEAD on every GET route."""
    allow = (headers or {}).get("Allow")
    if allow is None:
        return headers
    methods = [method.strip().upper() for method in allow.split(",")]
    return {**headers, "Allow": allow + ", HEAD"} if "GET" in methods and "HEAD" not in methods else headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status_code, error.detail, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in error.errors()
        ]
        detail = "; ".join(f"{_location(p)}: {p['msg']}" for p in problems) or "invalid request"
        return _error(422, detail, request, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = (error.status_code == 400 and _multipart_detail(error)) or str(error.detail)
        return _error(error.status_code, detail, request, headers=allow_head(error.headers))  # a 405's Allow

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the request id identifies it in the logs", request)
