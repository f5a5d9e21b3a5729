"""Response shapes shared by several routers, named by role so the OpenAPI page reads well."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel, Field


def json_response(body: BaseModel, exclude_none: bool = False) -> Response:
    """`body` as JSON, rendered by pydantic's serializer in one call.

    The model endpoints build their answers from validated models already; returning them through
    `response_model` would dump, validate and encode each answer again on the event loop (tens of
    microseconds for ten class scores). The route's `response_model` still documents the shape."""
    return Response(body.model_dump_json(exclude_none=exclude_none), media_type="application/json")


class ErrorPublic(BaseModel):
    """Every 4xx/5xx body: a readable `detail`, and for validation errors the failing fields."""

    detail: str
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None


ERROR_TEXTS: dict[int, str] = {
    400: "Bad request",
    401: "Missing or wrong API key",
    403: "Admin endpoints are disabled (no ADMIN_API_KEY configured)",
    404: "Unknown model, version or resource",
    408: "The request body stalled for longer than BODY_READ_TIMEOUT_S",
    413: "Upload or body over a size limit",
    415: "Unsupported media type",
    416: "A Range header past the end of the file",
    422: "Invalid input, with the reason",
    500: "Internal error (a bug): no stack trace; the request id finds it in the logs",
    503: "Not ready: models are loading or being swapped; retry shortly",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for these error statuses, all with the `ErrorPublic` body."""
    return {code: {"model": ErrorPublic, "description": ERROR_TEXTS[code]} for code in codes}


# Every error a public route taking an upload or a body can answer with.
ERROR_RESPONSES = error_responses(400, 404, 408, 413, 415, 422, 500, 503)


class ClassProbability(BaseModel):
    label: str
    probability: float = Field(ge=0.0, le=1.0)


class Prediction(BaseModel):
    """What every classifier answers for one image."""

    model: str
    version: int
    label: str
    top: list[ClassProbability]
    filename: str | None = None


class PredictionList(BaseModel):
    """The answer to several images in one request, in the order they were sent."""

    model: str
    version: int
    predictions: list[Prediction]
    count: int
