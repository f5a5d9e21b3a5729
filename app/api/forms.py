"""Why a request's form could not be read, in the service's words.

Starlette answers every form it cannot read with a 400 of its own wording ("Invalid multipart data.",
"Too many files. ..."), and FastAPI reads an upload route's body as a form whatever its content
type. The error handlers (app/api/errors.py) ask here what to tell the client instead.
"""

from __future__ import annotations

import re

from fastapi import Request, params
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE
from starlette.exceptions import HTTPException as StarletteHTTPException

# The limits of Starlette's form parser (the route's, or the parser's defaults), worded for a reader
# of the service, with the status of a limit (413, not its 400).
FORM_LIMITS = (
    (re.compile(r"Too many files\. Maximum number of files is (\d+)\."), "more than {0} files in the form"),
    (re.compile(r"Too many fields\. Maximum number of fields is (\d+)\."), "more than {0} fields in the form"),
    (re.compile(r"(?:Part|Field) exceeded maximum size of (\d+)KB\."),
     "a form field over {0} KB (a file goes in a file part, with a filename)"),
)


def unreadable_form(request: Request, error: StarletteHTTPException) -> tuple[int, str] | None:
    """The status and detail to answer for Starlette's 400 on a form it could not read, or None
    if `error` is not one: 415 for a body that is not multipart on an upload route, 413 for a form
    limit, 400 with the multipart parser's own reason or for JSON nested past Python's recursion limit."""
    if error.status_code != 400:
        return None
    if (upload := upload_not_in_multipart(request)) is not None:
        return 415, not_multipart_detail(request, upload)
    if (over := form_limit(error)) is not None:
        return 413, over
    if (reason := multipart_problem(error)) is not None:
        return 400, reason
    if isinstance(error.__cause__, RecursionError):  # FastAPI's "There was an error parsing the body"
        return 400, "the JSON body is nested too deeply to read"
    return None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def upload_not_in_multipart(request: Request) -> str | None:
    """The route's file upload (its first `File()` parameter), if the body is not multipart/form-data.

    FastAPI reads an upload route's body as a form whatever its type, so a JSON, text or untyped
    body fails as "body.file: Field required", a urlencoded `file=x` with a Python repr, and a
    urlencoded body of many fields with the form parser's limits: all are the wrong content type."""
    if media_type(request) == "multipart/form-data":
        return None
    return route_upload(request)


def json_body_not_json(request: Request) -> str | None:
    """The detail of a 415 for a JSON-body route sent something else, or None.

    FastAPI reads a body of another type as bytes and answers "Input should be a valid dictionary"."""
    sent = media_type(request)
    if sent == "application/json" or sent.endswith("+json"):
        return None
    if not any(isinstance(field.field_info, params.Body) and not isinstance(field.field_info, params.Form)
               for field in body_fields(request)):
        return None
    return f"{content_type_sent(request)}: send the body as application/json"


def body_fields(request: Request) -> list:
    """The body parameters of the route that matched, as FastAPI declared them."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return list(getattr(dependant, "body_params", ()))


def route_upload(request: Request) -> str | None:
    """The name of the route's file upload (its first `File()` parameter), if it has one."""
    return next((field.alias for field in body_fields(request) if isinstance(field.field_info, params.File)), None)


def content_type_sent(request: Request) -> str:
    """The content type the request named, as a 415's detail begins: "content type 'text/plain'"."""
    sent = media_type(request)
    return f"content type {sent!r}" if sent else "no content type"


def not_multipart_detail(request: Request, upload: str) -> str:
    """The 415's detail, naming the content type sent (a urlencoded form cannot carry files either)."""
    return f"{content_type_sent(request)}: send multipart/form-data with the image(s) in the '{upload}' field"


def text_not_file(field: str) -> str:
    """Why a part without a filename is not the upload: Starlette reads it as a text field (curl's
    `-F file=<path`, a part built by hand, a `filename*` alone, which RFC 7578 forbids in forms)."""
    return (f"the '{field}' part has no filename, so it is a text field, not a file: send it as a file "
            f"(curl -F {field}=@path)")


def text_parts_instead_of_upload(request: Request, problems: list[dict]) -> str | None:
    """The detail for a validation error that is only the route's upload sent as text, or None."""
    upload = route_upload(request)
    if upload is None:
        return None
    mine = [p for p in problems if p["loc"][:2] == ["body", upload]]
    if mine and all("Expected UploadFile" in p["msg"] for p in mine):
        return text_not_file(upload)
    return None


def form_limit(error: StarletteHTTPException) -> str | None:
    """The detail of a 413 for a Starlette form limit `error` reports, or None if it is not one."""
    for pattern, detail in FORM_LIMITS:
        if found := pattern.fullmatch(str(error.detail)):
            return detail.format(*found.groups())
    return None


def multipart_problem(error: StarletteHTTPException) -> str | None:
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
