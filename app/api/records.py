"""Reading numeric records (JSON or CSV) from a request within the limits, naming any bad record.

JSON: `{"records": [[...], ...]}` or `{"record": [...]}` (or a bare array of either). CSV: one record
per line, comma- or tab-separated, as a multipart upload in the `file` field or a `text/csv` body.
Errors name the record the way the client wrote it: `records[3][17]` in JSON, `line 4, column 18`
in CSV. A CSV of plain numbers is read by numpy, in C; anything else, and every refusal, by the
cell-by-cell reader, which words the error.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from app.api.forms import text_not_file
from app.api.uploads import sized_work
from app.config import Settings
from app.errors import BadInput, TooLarge, Unsupported

CSV_FIELD = "file"
CSV_TYPES = ("text/csv", "text/plain", "application/csv")

# The request body the OpenAPI page shows: the route reads the body itself to accept both forms.
RECORDS_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "properties": {"records": {"type": "array", "items": {
                            "type": "array", "items": {"type": "number"}}}}, "required": ["records"]},
                        {"type": "object", "properties": {"record": {"type": "array", "items": {
                            "type": "number"}}}, "required": ["record"]},
                    ]
                },
                "example": {"record": [0.0] * 4},
            },
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {CSV_FIELD: {"type": "string", "format": "binary"}},
                           "required": [CSV_FIELD]},
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_PLAIN_NUMBERS = {int, float}  # not bool, which is an int subclass with its own type


def _as_number(value: Any, where: str) -> float:
    # bool is an int in Python, and numpy would turn "1.5" into a number: reject both explicitly.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{where}: {_describe(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BadInput(f"{where}: {'NaN' if math.isnan(number) else 'Infinity'} is not allowed; "
                       "every value must be a finite number")
    return number


def _check_length(values: list[Any], length: int, name: str) -> None:
    if len(values) != length:
        raise BadInput(f"{name} has {len(values)} values; expected {length}")


def _batch_of(payload: Any) -> tuple[list[Any], bool]:
    """The list of records a JSON body holds, and whether it was sent as a batch."""
    if isinstance(payload, dict):
        keys = [key for key in ("records", "record") if key in payload]
        if len(keys) != 1:
            raise BadInput('the JSON body must hold either "records" (a list of records) or "record" (one record)')
        value = payload[keys[0]]
        if not isinstance(value, list):
            raise BadInput(f'"{keys[0]}" must be a list, not {type(value).__name__}')
        return (value, True) if keys[0] == "records" else ([value], False)
    if isinstance(payload, list):
        is_batch = not payload or isinstance(payload[0], list)
        return (payload, True) if is_batch else ([payload], False)
    raise BadInput('the JSON body must be an object with "records" or "record", or an array')


def json_records(payload: Any, length: int, max_records: int) -> np.ndarray:
    """A parsed JSON body → (n, length) float array, or a BadInput/TooLarge naming the record."""
    batch, is_batch = _batch_of(payload)
    if not batch:
        raise BadInput("empty batch: send at least one record")
    if len(batch) > max_records:
        raise TooLarge(f"{len(batch)} records in one request; the limit is {max_records}")
    rows = np.empty((len(batch), length), dtype=np.float64)
    for index, record in enumerate(batch):
        name = f"records[{index}]" if is_batch else "record"
        if not isinstance(record, list):
            raise BadInput(f"{name} is {_describe(record)}, not a list of {length} numbers")
        _check_length(record, length, name)
        if set(map(type, record)) <= _PLAIN_NUMBERS:  # the common case, checked in C
            try:
                rows[index] = record
            except OverflowError:  # an integer too large for a float: the slow path names it
                pass
            else:
                if np.isfinite(rows[index]).all():
                    continue
        rows[index] = [_as_number(value, f"{name}[{position}]") for position, value in enumerate(record)]
    return rows


def _keep_constant(name: str) -> float:
    """Python's JSON parser accepts NaN and Infinity (JSON has neither); keep them so the record is named."""
    return float(name.replace("Infinity", "inf"))


def parse_json_records(body: bytes, length: int, max_records: int) -> np.ndarray:
    try:
        payload = json.loads(body, parse_constant=_keep_constant)
    except ValueError as error:  # JSONDecodeError, bad UTF-8, or an integer over Python's digit limit
        raise BadInput(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadInput("the body is not valid JSON: nested too deeply") from None
    return json_records(payload, length, max_records)


def _csv_number(cell: str, where: str) -> float:
    text = cell.strip()
    if not text:
        raise BadInput(f"{where}: empty cell")
    try:
        number = _as_number(float(text), where)
    except ValueError:
        raise BadInput(f"{where}: {_describe(text)} is not a number (no header row; one record per line)") from None
    if not text.isascii() or "_" in text:  # float() also reads "1_0" and other scripts' digits
        raise BadInput(f"{where}: {_describe(text)} is not a number written in ASCII digits")
    return number


def _is_blank(cells: list[str]) -> bool:
    """A line with no separator and nothing but whitespace: skipped. A line of empty cells (`,,,`)
    is not, so every later record keeps the index the client counted."""
    return len(cells) <= 1 and not "".join(cells).strip()


def _csv_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(f"the CSV is not UTF-8 text: byte {error.start} cannot be decoded") from None


def _csv_delimiter(text: str) -> str:
    """A tab if the first line that is not blank holds one, else a comma."""
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    return "\t" if "\t" in first_line else ","


def _too_many_records(max_records: int) -> TooLarge:
    return TooLarge(f"over {max_records} records in one request; the limit is {max_records}")


def _cell_by_cell_rows(text: str, delimiter: str, length: int, max_records: int) -> np.ndarray:
    """The reader that words every refusal (`line 4, column 2: ...`); in Python, so slow: about
    150 ms for 1,000 records of 140 values."""
    rows: list[list[float]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for cells in reader:
            if _is_blank(cells):
                continue
            line = reader.line_num
            if len(rows) == max_records:
                raise _too_many_records(max_records)
            _check_length(cells, length, f"line {line}")
            rows.append([_csv_number(cell, f"line {line}, column {column}") for column, cell in enumerate(cells, 1)])
    except csv.Error as error:
        raise BadInput(f"malformed CSV at line {reader.line_num}: {error}") from None
    if not rows:
        raise BadInput("empty batch: the CSV holds no records")
    return np.asarray(rows, dtype=np.float64)


# What the plain reader takes: ASCII digits, signs, points, exponents, the separators, spaces and
# line ends. Within these, numpy reads a cell exactly when float() does, to the same value (both
# call CPython's PyOS_string_to_double after trimming spaces), and never reads NaN, infinity, `1_0`
# or other scripts' digits. Anything else (quotes, letters, other whitespace) is read cell by cell.
PLAIN_CSV_CHARACTERS = b"0123456789+-.eE,\t \r\n"
# numpy holds the GIL while it reads: about 1 ms for a block of this many characters, after
# which the event loop can take its turn (one call for 1,000 records held it 25-130 ms).
CSV_BLOCK_CHARACTERS = 64 * 1024


def _line_blocks(text: str, size: int) -> Iterator[str]:
    """`text` cut into pieces of about `size` characters, each ending at a line end."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _plain_rows(block: str, delimiter: str, length: int) -> np.ndarray | None:
    """The records of one block of plain lines, or None if any line is not a record."""
    try:
        rows = np.loadtxt(io.StringIO(block), delimiter=delimiter, comments=None, ndmin=2)
    except ValueError:  # an empty cell, a line of whitespace, a wrong count, "1e", "--1"...
        return None
    return rows if rows.shape[1] == length and np.isfinite(rows).all() else None


def _over_field_limit(ascii_text: bytes, delimiter: str) -> bool:
    """Whether a cell is longer than the csv module reads (csv.field_size_limit()): only a line
    that long can hold one, so the lines are measured first (under 1 ms for 1,000 records)."""
    limit = csv.field_size_limit()
    long_lines = [line for line in ascii_text.splitlines() if len(line) > limit]
    return any(len(cell) > limit for line in long_lines for cell in line.split(delimiter.encode()))


def _plain_csv_rows(text: str, delimiter: str, length: int, max_records: int) -> np.ndarray | None:
    """Every record of a CSV of plain numbers, read by numpy in C (about 25 ms for 1,000 records of
    140 values), or None for anything else, which the cell-by-cell reader reads or words."""
    if not text.isascii() or text.isspace():
        return None
    ascii_text = text.encode("ascii")
    if ascii_text.translate(None, PLAIN_CSV_CHARACTERS) or _over_field_limit(ascii_text, delimiter):
        return None
    if "\r" in text:  # CRLF and a lone CR end a line, as in the csv module
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[np.ndarray] = []
    count = 0
    for block in _line_blocks(text, CSV_BLOCK_CHARACTERS):
        if not block.strip("\n"):  # empty lines only (numpy would warn that it found no data)
            continue
        rows = _plain_rows(block, delimiter, length)
        if rows is None:
            return None
        count += len(rows)
        if count > max_records:
            raise _too_many_records(max_records)
        blocks.append(rows)
    return np.concatenate(blocks) if blocks else None


def parse_csv_records(data: bytes, length: int, max_records: int) -> np.ndarray:
    """CSV bytes → (n, length) float array; blank lines are skipped, anything else must be a record."""
    text = _csv_text(data)
    delimiter = _csv_delimiter(text)
    rows = _plain_csv_rows(text, delimiter, length, max_records)
    return rows if rows is not None else _cell_by_cell_rows(text, delimiter, length, max_records)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it grows past `limit`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"request body over the limit of {limit} bytes for records")
    return bytes(body)


async def read_csv_upload(request: Request, limit: int, max_files: int) -> bytes:
    # A body the multipart parser cannot read raises Starlette's 400, left to the handler that
    # explains it (app/api/forms.py) as it does for the image routes.
    form = await request.form(max_files=max_files, max_fields=max_files)
    values = form.getlist(CSV_FIELD)
    uploads = [value for value in values if isinstance(value, UploadFile)]
    if not uploads and values:
        raise BadInput(text_not_file(CSV_FIELD))
    if len(uploads) != 1:
        raise BadInput(f"send one CSV file in the '{CSV_FIELD}' field (got {len(uploads)})")
    data = await uploads[0].read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the CSV upload is over the limit of {limit} bytes")
    return data


async def read_records(request: Request, settings: Settings, length: int) -> np.ndarray:
    """Every record of the request as an (n, length) float64 array, in the order sent."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    limit, max_records = settings.MAX_RECORDS_BYTES, settings.MAX_RECORDS_PER_REQUEST
    if content_type == "multipart/form-data":
        data = await read_csv_upload(request, limit, settings.MAX_FILES_PER_REQUEST)
        return await sized_work(len(data), parse_csv_records, data, length, max_records)
    if content_type in CSV_TYPES:
        data = await read_body(request, limit)
        return await sized_work(len(data), parse_csv_records, data, length, max_records)
    if content_type == "application/json" or content_type.endswith("+json"):
        data = await read_body(request, limit)
        return await sized_work(len(data), parse_json_records, data, length, max_records)
    raise Unsupported(f"content type {content_type!r}: send JSON, a CSV upload (multipart 'file') or text/csv")
