"""The admin API key: required by every endpoint that changes state."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Security
from fastapi.security import APIKeyHeader

from app.api.deps import SettingsDep
from app.errors import Forbidden, Unauthorized

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The ADMIN_API_KEY setting.")


def require_admin(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Open only with the configured key, compared in constant time; closed when none is configured."""
    if settings.ADMIN_API_KEY is None or not settings.ADMIN_API_KEY.get_secret_value():
        raise Forbidden("admin endpoints are disabled: set ADMIN_API_KEY to enable them")
    expected = settings.ADMIN_API_KEY.get_secret_value().encode()
    if key is None or not hmac.compare_digest(key.encode(), expected):
        raise Unauthorized("missing or wrong X-API-Key header")
