"""One JSON error shape for every failure; clients never see a stack trace."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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


# The limits of Starlette's form parser (the route's, or the parser's defaults), worded for a reader
# of the service, with the status of a limit (413, not its 400).
FORM_LIMITS = (
    (re.compile(r"Too many files\. Maximum number of files is (\d+)\."), "more than {0} files in the form"),
    (re.compile(r"Too many fields\. Maximum number of fields is (\d+)\."), "more than {0} fields in the form"),
    (re.compile(r"(?:Part|Field) exceeded maximum size of (\d+)KB\."),
     "a form field over {0} KB (a file goes in a file part, with a filename)"),
)


def _form_limit(error: StarletteHTTPException) -> str | None:
    """The detail of a 413 for a Starlette form limit `error` reports, or None if it is not one."""
    for pattern, detail in FORM_LIMITS:
        if found := pattern.fullmatch(str(error.detail)):
            return detail.format(*found.groups())
    return None


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


def _validation_error(problems: list[dict], request: Request) -> JSONResponse:
    detail = "; ".join(f"{_location(p)}: {p['msg']}" for p in problems) or "invalid request"
    return _error(422, detail, request, problems)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _upload_not_in_multipart(request: Request) -> str | None:
    """The route's file upload (its first `File()` parameter), if the body is not multipart/form-data.

    FastAPI reads an upload route's body as a form whatever its type, so a JSON, text or untyped
    body fails as "body.file: Field required", a urlencoded `file=x` with a Python repr, and a
    urlencoded body of many fields with the form parser's limits: all are the wrong content type."""
    if _media_type(request) == "multipart/form-data":
        return None
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return next((field.alias for field in getattr(dependant, "body_params", ())
                 if isinstance(field.field_info, params.File)), None)


def _not_multipart_error(request: Request, upload: str) -> JSONResponse:
    """A 415 naming the content type sent (a urlencoded form cannot carry files either)."""
    media_type = _media_type(request)
    sent = f"content type {media_type!r}" if media_type else "no content type"
    return _error(415, f"{sent}: send multipart/form-data with the image(s) in the '{upload}' field", request)


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
        upload = _upload_not_in_multipart(request)  # only on errors: uploads that work pay nothing
        if upload is not None and any(p["loc"][:2] == ["body", upload] for p in problems):
            return _not_multipart_error(request, upload)
        return _validation_error(problems, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and (upload := _upload_not_in_multipart(request)) is not None:
            return _not_multipart_error(request, upload)
        if error.status_code == 400 and (over := _form_limit(error)) is not None:
            return _error(413, over, request)
        detail = (error.status_code == 400 and _multipart_detail(error)) or str(error.detail)
        headers = allowed_methods(request, error.headers) if error.status_code == 405 else error.headers
        return _error(error.status_code, detail, request, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the request id identifies it in the logs", request)
