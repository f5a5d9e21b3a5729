"""Files served as they are (run plots, the docs' assets), with the service's JSON errors for a Range."""

from __future__ import annotations

import os

from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.staticfiles import NotModifiedResponse
from starlette.types import Scope


class JsonRangeFileResponse(FileResponse):
    """Starlette's FileResponse, with the service's JSON errors for a Range it cannot serve.

    Starlette answers those in plain text, and refuses a unit other than bytes, which RFC 9110
    (section 14.2) says to ignore: that is served as a 200 with the whole file. The range is
    parsed before anything is sent, so an error raised there reaches the handlers below.
    """

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        unit, has_ranges, _ = http_range.partition("=")
        if has_ranges and unit.strip().lower() != "bytes":
            return []  # no ranges: the whole file
        shown = repr(http_range if len(http_range) <= 60 else http_range[:57] + "...")
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as error:
            reason = error.content.removeprefix("Range header: ").rstrip(".").lower()
            raise StarletteHTTPException(400, f"Range header {shown}: {reason}; ask for bytes=first-last (such as "
                                              "bytes=0-1023), or leave Range out for the whole file") from None
        except RangeNotSatisfiable as error:
            raise StarletteHTTPException(416, f"Range header {shown}: a range starts past the end of the file "
                                              f"({error.max_size} bytes)",
                                         headers={"Content-Range": f"bytes */{error.max_size}"}) from None


class JsonRangeStaticFiles(StaticFiles):
    """Starlette's StaticFiles, serving each file as a `JsonRangeFileResponse` (JSON errors for a bad Range)."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = JsonRangeFileResponse(full_path, status_code=status_code, stat_result=stat_result)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response
