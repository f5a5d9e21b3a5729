"""/docs and /redoc from assets shipped in a Python package, so they render with no internet, and the
/openapi.json they read, with the bounds the settings fix written in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.api.files import JsonRangeStaticFiles
from app.api.query import publish_settings
from app.config import Settings

ASSETS = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/docs-assets"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def read_swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="labnets API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon.png",
    )


@router.get("/redoc")
def read_redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json", title="labnets API", redoc_js_url=f"{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{PREFIX}/favicon.png", with_google_fonts=False,
    )


def install_docs(app: FastAPI, settings: Settings) -> None:
    app.mount(PREFIX, JsonRangeStaticFiles(directory=ASSETS), name="docs-assets")
    app.include_router(router)
    install_openapi(app, settings)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """The app's OpenAPI document, built on first use as FastAPI builds it, with the values of the
    bounds that come from `settings` (`k` at most MAX_K) written in."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = publish_settings(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
