"""POST /detect: objects in one or several images, as boxes in each image's own pixel coordinates,
or drawn on it as PNG. The tiles of every uploaded image run together, in pieces of TILES_PER_CALL rows."""

from __future__ import annotations

import io
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import Response
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from app.api.deps import serving
from app.api.query import DecimalNumber, ModelQuery, WholeNumber, documented, model_field, one_of, read_query
from app.api.schemas import ERROR_RESPONSES, json_response
from app.api.uploads import read_uploads, sized_work
from app.config import Settings
from app.detection.tiled import TILES_PER_CALL, TiledImage, detections_from_outputs, tile_as_manifest
from app.detection.views import VIEW_COUNTS, averaged_views, mirrored_rows, view_count
from app.errors import BadInput, ClientGone, TooLarge
from app.preprocessing.images import load_image, open_image, to_rgb
from app.preprocessing.tiling import tile_grid
from app.serving.budget import PixelBudget, pixel_budget
from app.store.store import LoadedModel

router = APIRouter(prefix="/detect", tags=["detect"], responses=ERROR_RESPONSES)


class Detection(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    score: float = Field(ge=0.0, le=1.0)


class DetectionsPublic(BaseModel):
    """Every object found in one image, best score first."""

    model: str
    version: int
    width: int
    height: int
    score_threshold: float
    flip_views: int = Field(description="Mirror views of each tile whose outputs were averaged.")
    detections: list[Detection]
    count: int
    filename: str | None = None


class DetectionsList(BaseModel):
    """The answer to several images in one request, in the order they were sent."""

    model: str
    version: int
    results: list[DetectionsPublic]
    count: int


def open_within_tiles(contents: list[tuple[str, bytes]], fields: dict[str, Any], views: int,
                      settings: Settings) -> list[tuple[str, Image.Image]]:
    """Every upload opened (its header read and checked, no pixel decoded), and a 413 if the request's
    tile passes (tiles x views, over all its images) are over MAX_DETECT_TILES: known from the
    headers' sizes, before the request waits for a detect slot or decodes anything. An EXIF
    rotation swaps width and height, which leaves the count of tiles unchanged."""
    opened, passes, limit, upscale = [], 0, settings.MAX_DETECT_TILES, fields.get("upscale", 1.0)
    for name, data in contents:
        image = open_image(data, settings.MAX_IMAGE_PIXELS, name)
        tiles = len(tile_grid(round(image.width * upscale), round(image.height * upscale), fields["tile"],
                              fields["overlap"]))
        passes += tiles * views
        if passes > limit:
            what = f"{name}: {image.width}x{image.height} ({tiles} tiles of {fields['tile']} px, {views} view(s) each)"
            if len(contents) > 1:
                what += " with the images before it"
            hint = " (fewer flip_views run fewer)" if views > 1 else ""
            raise TooLarge(f"{what} needs {passes} tile passes; the limit is {limit}{hint}")
        opened.append((name, image))
    return opened


def tile_images(opened: list[tuple[str, Image.Image]], fields: dict[str, Any], preprocessing: dict[str, Any],
                budget: PixelBudget) -> tuple[list[tuple[Image.Image, TiledImage]], np.ndarray]:
    """Decode and tile every opened upload, each holding its pixels from the service's decoding
    budget meanwhile, and all their tiles as one array (in one view: the mirrors are made piece by
    piece as the model runs, `run_tiles`)."""
    tiled, upscale = [], float(fields.get("upscale", 1.0))
    for name, image in opened:
        with budget.holding(round(image.width * upscale) * round(image.height * upscale)):  # as tiled
            rgb = to_rgb(load_image(image, name))
            tiled.append((rgb, tile_as_manifest(np.asarray(rgb), fields, preprocessing)))
    return tiled, np.concatenate([tiles.batch for _, tiles in tiled])


async def check_client(request: Request) -> None:
    """A 499 once the client has disconnected (known once its body is read), so its tiles stop
    holding a detect slot: four clients that gave up after 1 s made the next request wait 60 s."""
    if await request.is_disconnected():
        raise ClientGone("the client disconnected")


async def run_tiles(loaded: LoadedModel, tiles: np.ndarray, views: int, request: Request) -> np.ndarray:
    """The model's outputs for the rows of `with_mirrors(tiles, views)`, TILES_PER_CALL rows per
    call, each piece mirrored on the thread that runs the model, the client checked between
    calls: a request whose client has gone stops at its next piece."""
    rows, pieces = len(tiles) * views, []
    for start in range(0, rows, TILES_PER_CALL):
        if start:
            await check_client(request)
        stop = min(start + TILES_PER_CALL, rows)
        piece = await loaded.infer((start, stop), lambda span: mirrored_rows(tiles, views, *span), rows=stop - start)
        pieces.append(np.asarray(piece))
    return np.concatenate(pieces)


def image_detections(rows: np.ndarray, tiles: TiledImage, fields: dict[str, Any], threshold: float,
                     label: str) -> list[Detection]:
    """One image's model outputs → its detections, best first (merging tiles and NMS: run off the event loop)."""
    boxes, scores = detections_from_outputs(rows, tiles, fields["stride"], threshold, fields["nms_iou"])
    return [Detection(x1=round(b[0], 1), y1=round(b[1], 1), x2=round(b[2], 1), y2=round(b[3], 1),
                      label=label, score=round(float(s), 4)) for b, s in zip(boxes, scores, strict=True)]


def draw_boxes(image: Image.Image, detections: list[Detection]) -> bytes:
    canvas = image.copy()
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(min(image.size) / 200))
    for box in detections:
        pen.rectangle((box.x1, box.y1, box.x2, box.y2), outline=(255, 40, 40), width=width)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


class DetectQuery(ModelQuery):
    model: str = model_field("trees", "A detector in /models.")
    score_threshold: DecimalNumber | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="Default: the model's.")
    draw: bool = Field(False, description="Answer with the image and its boxes drawn, as PNG (one file only).")
    flip_views: Annotated[WholeNumber, one_of(VIEW_COUNTS)] | None = Field(None, description=(
        "Mirror views of each tile to average: 1, 2 or 4 (default: the model's). Each view is one more "
        "pass of the network; fewer views answer faster, more find trees better."))


@router.post("", response_model=DetectionsPublic | DetectionsList, openapi_extra=documented(DetectQuery),
             responses={200: {"content": {"image/png": {}}, "description": "JSON boxes, or the PNG with `draw=true`"}})
async def detect_objects(
    request: Request,
    file: Annotated[list[UploadFile], File(description="One or more images (PNG, JPEG, BMP, GIF, WebP), any size within the limits.")],
) -> Response:
    """Detect objects; large images are tiled as in training and boxes merged across tiles."""
    store, settings = serving(request)
    query = read_query(request, DetectQuery)
    model, draw = query.model, query.draw
    loaded = store.get(model, query.version, task="detect")
    manifest = loaded.manifest
    fields = (manifest.model_extra or {})["detection"]
    threshold = fields["score_threshold"] if query.score_threshold is None else query.score_threshold
    try:
        views = view_count(fields, query.flip_views)
    except ValueError as error:
        raise BadInput(str(error)) from None
    contents = await read_uploads(file, settings)
    if draw and len(contents) > 1:
        raise BadInput(f"draw=true answers one image; {len(contents)} were sent")
    opened = await sized_work(sum(len(data) for _, data in contents), open_within_tiles, contents, fields, views,
                              settings)
    async with request.app.state.detect_slots:  # tiles at MAX_DETECT_TILES: 0.2 GB, held twice: a few at a time
        await check_client(request)  # its turn may come long after its client gave up: no work then
        tiled, tiles = await anyio.to_thread.run_sync(tile_images, opened, fields, manifest.preprocessing,
                                                      pixel_budget(settings.MAX_DECODING_PIXELS))
        outputs = await anyio.to_thread.run_sync(averaged_views, await run_tiles(loaded, tiles, views, request), views)
        del tiles
    label = manifest.labels[0] if manifest.labels else "object"
    results, start = [], 0
    for upload, (image, tiles) in zip(file, tiled, strict=True):
        rows = outputs[start : start + len(tiles.batch)]
        start += len(tiles.batch)
        detections = await anyio.to_thread.run_sync(image_detections, rows, tiles, fields, threshold, label)
        if draw:
            png = await anyio.to_thread.run_sync(draw_boxes, image, detections)
            return Response(content=png, media_type="image/png")
        results.append(DetectionsPublic(model=model, version=loaded.version, width=image.width, height=image.height,
                                        score_threshold=threshold, flip_views=views, detections=detections,
                                        count=len(detections),
                                        filename=upload.filename))
    if len(results) == 1:
        return json_response(results[0])
    return json_response(DetectionsList(model=model, version=loaded.version, results=results, count=len(results)))
