"""No-model twins of the model endpoints, for the load benchmark only (`BENCHMARK_BASELINES=true`).

Each does the same HTTP work as its model endpoint (the same upload read within the limits and
decoded, the same JSON validated, the same query parsed) and returns a constant of the same shape,
rendered straight to a response as the model endpoints render theirs, so `benchmarks.serve` can
report what the models add on top of HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app.api.deps import serving
from app.api.schemas import ERROR_RESPONSES, ClassProbability, Prediction, json_response
from app.api.uploads import decode_all, read_uploads, sized_work

router = APIRouter(prefix="/baseline", tags=["benchmark"], responses=ERROR_RESPONSES)
CONSTANT = Prediction(model="baseline", version=0, label="0", top=[ClassProbability(label="0", probability=1.0)])


@router.post("/upload", response_model=Prediction)
async def baseline_upload(
    request: Request,
    file: Annotated[list[UploadFile], File()],
    model: Annotated[str, Query(max_length=64)] = "digits",
) -> Response:
    """Read and decode the uploaded images like /classify, then answer a constant."""
    _, settings = serving(request)
    contents = await read_uploads(file, settings)
    await sized_work(sum(len(data) for _, data in contents), decode_all, contents, settings.MAX_IMAGE_PIXELS)
    return json_response(CONSTANT)


@router.post("/json", response_model=dict[str, Any])
async def baseline_json(body: Annotated[dict[str, Any], Body()]) -> Response:
    """Parse a JSON body and answer a constant."""
    return JSONResponse({"model": "baseline", "count": len(body)})


@router.get("/get", response_model=dict[str, Any])
async def baseline_get(
    word: Annotated[str, Query(min_length=1, max_length=64)], k: Annotated[int, Query(ge=1, le=100)] = 10
) -> Response:
    """Validate a query string and answer a constant."""
    return JSONResponse({"word": word, "k": k, "neighbours": []})
