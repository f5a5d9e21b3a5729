"""Reading image uploads within the limits, and preparing them for a model, for every image route."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
from fastapi import UploadFile
from PIL import Image

from app.config import Settings
from app.errors import ApiError, BadInput, TooLarge
from app.preprocessing import prepare_images, shrunk_size
from app.preprocessing.images import decode_image, load_image, open_image, shrink_on_decoding
from app.serving.budget import PixelBudget, pixel_budget

T = TypeVar("T")
# Below this many bytes, decoding and preparing on the event loop is cheaper than a thread hop.
INLINE_BYTES = 64 * 1024
# Images of at most this many pixels are prepared as one stack with the batch's other small ones.
STACKED_PIXELS = 128 * 128


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


@dataclass(frozen=True)
class UploadPreparer:
    """Decodes and prepares one request's uploads for one model: one float32 batch in upload order,
    or a 4xx naming the file. Handed to `LoadedModel.infer`, it runs on the thread that runs the
    model, not on the event loop; equal preparers (the same model's) let the batcher prepare the
    uploads of all its requests together (`many`)."""

    preprocessing: dict[str, Any]
    max_pixels: int
    budget: PixelBudget | None = None  # pixels decoded at once across the process; None: no bound

    def __call__(self, contents: list[tuple[str, bytes]]) -> np.ndarray:
        (result,) = self.many([contents])
        if isinstance(result, Exception):
            raise result
        return result

    def prepare_large(self, image: Image.Image, label: str) -> np.ndarray | BadInput:
        """One opened image over STACKED_PIXELS decoded and prepared alone, holding its pixels from
        the decoding budget meanwhile (the pixels it decodes to, after `shrink_on_decoding`)."""
        pixels = image.width * image.height
        with self.budget.holding(pixels) if self.budget is not None else contextlib.nullcontext():
            (result,) = prepare_images([load_image(image, label)], self.preprocessing)
        return labelled(result, label)

    def many(self, requests: list[list[tuple[str, bytes]]]) -> list[np.ndarray | Exception]:
        """Each request's batch, or the error of its first bad file (in upload order, as if its
        files were prepared one after the other). Small images (at most STACKED_PIXELS) of all the
        requests are prepared together; a larger one is prepared as soon as it is decoded and then
        dropped, so memory holds one large image at a time, as before."""
        shrinks_to = shrunk_size(self.preprocessing)  # one preparation for every file of the batch
        slots: list[list[np.ndarray | Exception | None]] = []
        small, small_slots = [], []
        for contents in requests:
            files: list[np.ndarray | Exception | None] = []
            slots.append(files)
            for label, data in contents:
                try:
                    image = shrink_on_decoding(open_image(data, self.max_pixels, label), shrinks_to)
                    if image.width * image.height <= STACKED_PIXELS:
                        small.append(load_image(image, label))
                        small_slots.append((files, len(files), label))
                        files.append(None)
                    else:
                        files.append(self.prepare_large(image, label))
                except ApiError as error:
                    files.append(error)  # the files after it are never reached
                    break
        for (files, index, label), result in zip(small_slots, prepare_images(small, self.preprocessing), strict=True):
            files[index] = labelled(result, label)
        return [first_error(files) or np.stack(files).astype(np.float32, copy=False) for files in slots]


def labelled(result: np.ndarray | BadInput, label: str) -> np.ndarray | BadInput:
    """A preparation's BadInput names the file it came from."""
    return BadInput(f"{label}: {result.detail}") if isinstance(result, BadInput) else result


def first_error(files: list[Any]) -> Exception | None:
    return next((result for result in files if isinstance(result, Exception)), None)


def upload_preparer(preprocessing: dict[str, Any], settings: Settings) -> UploadPreparer:
    """The preparer for one model's uploads, to hand to `LoadedModel.infer`."""
    return UploadPreparer(preprocessing, settings.MAX_IMAGE_PIXELS, pixel_budget(settings.MAX_DECODING_PIXELS))
