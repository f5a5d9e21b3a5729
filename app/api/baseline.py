"""No-model twins of the model endpoints, for the load benchmark only (`BENCHMARK_BASELINES=true`).

Each does the same HTTP work as its model endpoint (the same upload read within the limits and
decoded, the same JSON validated, the same query parsed) and returns a constant of the same shape,
rendered straight to a response as the model endpoints render theirs, so `benchmarks.serve` can
report what the models add on top of HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app.api.anomaly import AnomalyQuery
from app.api.classify import ClassifyQuery
from app.api.deps import serving
from app.api.query import documented, read_query
from app.api.records import RECORDS_REQUEST_BODY, read_records
from app.api.schemas import ERROR_RESPONSES, ClassProbability, Prediction, json_response
from app.api.uploads import decode_all, read_uploads, sized_work
from app.api.words import SimilarQuery

router = APIRouter(prefix="/baseline", tags=["benchmark"], responses=ERROR_RESPONSES)
CONSTANT = Prediction(model="baseline", version=0, label="0", top=[ClassProbability(label="0", probability=1.0)])


@router.post("/upload", response_model=Prediction, openapi_extra=documented(ClassifyQuery))
async def baseline_upload(request: Request, file: Annotated[list[UploadFile], File()]) -> Response:
    """Read the query and the uploaded images like /classify, decode them, then answer a constant."""
    _, settings = serving(request)
    read_query(request, ClassifyQuery, serves=False)
    contents = await read_uploads(file, settings)
    await sized_work(sum(len(data) for _, data in contents), decode_all, contents, settings.MAX_IMAGE_PIXELS)
    return json_response(CONSTANT)


@router.post("/records", response_model=dict[str, Any], openapi_extra=documented(AnomalyQuery, **RECORDS_REQUEST_BODY))
async def baseline_records(request: Request) -> Response:
    """Read the query and the records (JSON or CSV) like /anomaly, all validated, then answer a constant."""
    store, settings = serving(request)
    query = read_query(request, AnomalyQuery, serves=False)
    length = store.get(query.model, query.version, task="anomaly").manifest.input_spec.shape[0]
    records = await read_records(request, settings, length)
    return JSONResponse({"model": "baseline", "count": len(records)})


@router.get("/get", response_model=dict[str, Any], openapi_extra=documented(SimilarQuery))
async def baseline_get(request: Request) -> Response:
    """Validate the query like /similar-words and answer a constant."""
    query = read_query(request, SimilarQuery, serves=False)
    return JSONResponse({"word": query.word, "k": query.k, "neighbours": []})
