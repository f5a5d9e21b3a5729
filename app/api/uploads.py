"""Reading image uploads within the limits, and preparing them for a model, for every image route."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import numpy as np
from fastapi import UploadFile

from app.config import Settings
from app.errors import BadInput, TooLarge
from app.preprocessing import prepare_image
from app.preprocessing.images import decode_image

T = TypeVar("T")
# Below this many bytes, decoding and preparing on the event loop is cheaper than a thread hop.
INLINE_BYTES = 64 * 1024


def upload_label(index: int, upload: UploadFile) -> str:
    """How an error names a file: its position, and its client-side name only as text."""
    return f"file {index + 1} ({upload.filename!r})" if upload.filename else f"file {index + 1}"


async def read_uploads(uploads: list[UploadFile], settings: Settings) -> list[tuple[str, bytes]]:
    if not uploads:
        raise BadInput("no file uploaded: send one or more images in the 'file' field")
    if len(uploads) > settings.MAX_FILES_PER_REQUEST:
        raise TooLarge(f"{len(uploads)} files in one request; the limit is {settings.MAX_FILES_PER_REQUEST}")
    contents = []
    for index, upload in enumerate(uploads):
        data = await upload.read(settings.MAX_UPLOAD_BYTES + 1)
        label = upload_label(index, upload)
        if len(data) > settings.MAX_UPLOAD_BYTES:
            raise TooLarge(f"{label} is over the upload limit of {settings.MAX_UPLOAD_BYTES} bytes")
        contents.append((label, data))
    return contents


async def sized_work(size: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` inline when its input is `size` <= INLINE_BYTES bytes, else in a worker thread."""
    if size <= INLINE_BYTES:
        return work(*args)
    return await anyio.to_thread.run_sync(work, *args)


def decode_all(contents: list[tuple[str, bytes]], max_pixels: int) -> list[Any]:
    return [decode_image(data, max_pixels, label) for label, data in contents]


def prepare_all(contents: list[tuple[str, bytes]], preprocessing: dict[str, Any], max_pixels: int) -> np.ndarray:
    """Decode and prepare every image: one float32 batch in upload order, or a 4xx naming the file."""
    prepared = []
    for label, data in contents:
        image = decode_image(data, max_pixels, label)
        try:
            prepared.append(prepare_image(image, preprocessing))
        except BadInput as error:
            raise BadInput(f"{label}: {error.detail}") from None
    return np.stack(prepared).astype(np.float32)


def upload_preparer(preprocessing: dict[str, Any], settings: Settings) -> Callable[[list[tuple[str, bytes]]], np.ndarray]:
    """`prepare_all` for one model, to hand to `LoadedModel.infer`: the uploads are decoded and
    prepared on the thread that runs the model, not on the event loop."""
    return functools.partial(prepare_all, preprocessing=preprocessing, max_pixels=settings.MAX_IMAGE_PIXELS)
