"""One JSON error shape for every failure; clients never see a stack trace."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.api.forms import (
    json_body_not_json,
    not_multipart_detail,
    text_parts_instead_of_upload,
    unreadable_form,
    upload_not_in_multipart,
)
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


def allowed_methods(request: Request, headers: dict[str, str] | None) -> dict[str, str] | None:
    """A 405's headers with `Allow` naming every method the path takes, HEAD beside GET.

    Starlette names only the methods of the first route on the path, though a path can have
    several (PATCH and DELETE on /admin/runs/{id}); `HeadMiddleware` answers HEAD on every GET
    route. A 405 no route raised (StaticFiles' own) keeps its `Allow`. Run on 405s only.
    """
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):  # FastAPI nests included routers: flatten them
        if route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods or set()
    if not methods:
        methods = {method.strip().upper() for method in (headers or {}).get("Allow", "").split(",") if method.strip()}
    if not methods:
        return headers
    if "GET" in methods:
        methods.add("HEAD")
    return {**(headers or {}), "Allow": ", ".join(sorted(methods))}


def slash_twin(request: Request) -> str | None:
    """The path with its trailing slash added or removed, as a relative URL, when a route takes it.

    Starlette's own redirect names the request's Host header in an absolute URL (`Host: evil.example`
    got `location: http://evil.example/health`); a relative one leaves the client where it is."""
    path = request.scope["path"]
    if path == "/":
        return None
    twin = path.rstrip("/") if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": twin}
    if not any(route.matches(scope)[0] is not Match.NONE for route in iter_route_contexts(request.app.routes)):
        return None
    query = request.scope.get("query_string", b"").decode("latin-1")
    return quote(twin) + (f"?{query}" if query else "")


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
        upload = upload_not_in_multipart(request)  # only on errors: uploads that work pay nothing
        if upload is not None and any(p["loc"][:2] == ["body", upload] for p in problems):
            return _error(415, not_multipart_detail(request, upload), request)
        if (text := text_parts_instead_of_upload(request, problems)) is not None:
            return _error(422, text, request, problems)
        if any(p["loc"][:1] == ["body"] for p in problems) and (wrong := json_body_not_json(request)) is not None:
            return _error(415, wrong, request)
        detail = "; ".join(f"{_location(p)}: {p['msg']}" for p in problems) or "invalid request"
        return _error(422, detail, request, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if (answer := unreadable_form(request, error)) is not None:
            status, detail = answer
            return _error(status, detail, request)
        if error.status_code == 404 and "route" not in request.scope and (twin := slash_twin(request)) is not None:
            return RedirectResponse(twin, status_code=307)
        headers = allowed_methods(request, error.headers) if error.status_code == 405 else error.headers
        return _error(error.status_code, str(error.detail), request, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the request id identifies it in the logs", request)
