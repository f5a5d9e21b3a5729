"""Errors the service answers with a JSON 4xx; raised at the edge, mapped in one handler."""

from __future__ import annotations


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApiError):
    status_code = 400


class BadInput(ApiError):
    status_code = 422


class NotFound(ApiError):
    status_code = 404


class TooLarge(ApiError):
    status_code = 413


class Unsupported(ApiError):
    status_code = 415


class RequestTimeout(ApiError):
    status_code = 408


class ClientGone(ApiError):
    """The client disconnected before its answer: work on it stops, and nobody reads the 499
    (nginx's code for a request its client closed), which only the logs and metrics see."""

    status_code = 499


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403
