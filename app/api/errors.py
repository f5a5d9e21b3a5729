"""One JSON error shape for every failure; clients never see a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
        return _error(error.status_code, str(error.detail), request, headers=error.headers)  # a 405's Allow

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the request id identifies it in the logs", request)
