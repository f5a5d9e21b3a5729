"""The admin API key: required by every endpoint that changes state."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import Forbidden, Unauthorized

ADMIN_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=ADMIN_KEY_HEADER, auto_error=False, description="The ADMIN_API_KEY setting.")


def check_admin_key(settings: Settings, key: str | None) -> None:
    """Open only with the configured key, compared in constant time; closed when none is configured."""
    if settings.ADMIN_API_KEY is None or not settings.ADMIN_API_KEY.get_secret_value():
        raise Forbidden("admin endpoints are disabled: set ADMIN_API_KEY to enable them")
    expected = settings.ADMIN_API_KEY.get_secret_value().encode()
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise Unauthorized("missing or wrong X-API-Key header")


class KeyFirstRoute(APIRoute):
    """A route that checks the admin key before anything of the request is read (the router
    declares the header with `Security(api_key_header)`, for the OpenAPI page only).

    FastAPI parses a JSON body before it runs the dependencies, so a caller without the key would
    learn from a 422 that its body was malformed; with this route class it gets the 401 (or 403)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            check_admin_key(request.app.state.settings, request.headers.get(ADMIN_KEY_HEADER))
            return await handler(request)

        return key_first
