"""POST /classify: one or several images, answered by any classifier in the store."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import Response
from pydantic import Field

from app.api.deps import serving
from app.api.query import ModelQuery, WholeNumber, at_most_setting, documented, model_field, read_query
from app.api.schemas import ERROR_RESPONSES, ClassProbability, Prediction, PredictionList, json_response
from app.api.uploads import read_uploads, upload_preparer

router = APIRouter(prefix="/classify", tags=["classify"], responses=ERROR_RESPONSES)


def default_k(num_classes: int) -> int:
    return num_classes if num_classes <= 10 else 5


def rank_classes(probabilities: np.ndarray, labels: list[str], k: int) -> list[ClassProbability]:
    order = np.argsort(-probabilities)[:k]
    return [ClassProbability(label=labels[i], probability=float(probabilities[i])) for i in order]


class ClassifyQuery(ModelQuery):
    model: str = model_field("digits", "A classifier in /models.")
    k: Annotated[WholeNumber, at_most_setting("MAX_K")] | None = Field(None, ge=1, description="How many top classes to return.")


@router.post("", response_model=Prediction | PredictionList, openapi_extra=documented(ClassifyQuery))
async def classify_images(
    request: Request,
    file: Annotated[list[UploadFile], File(description="One or more images (PNG, JPEG, BMP, GIF, WebP).")],
) -> Response:
    """Classify images; one file gets one prediction, several get a list in the same order."""
    store, settings = serving(request)
    query = read_query(request, ClassifyQuery)
    model, k = query.model, query.k
    loaded = store.get(model, query.version, task="classify")
    manifest = loaded.manifest
    top_k = min(k or default_k(len(manifest.labels)), len(manifest.labels))
    contents = await read_uploads(file, settings)
    prepare = upload_preparer(manifest.preprocessing, settings)
    probabilities = np.asarray(await loaded.infer(contents, prepare, rows=len(contents)))
    predictions = []
    for upload, row in zip(file, probabilities, strict=True):
        top = rank_classes(row, manifest.labels, top_k)
        predictions.append(
            Prediction(model=model, version=loaded.version, label=top[0].label, top=top, filename=upload.filename)
        )
    if len(predictions) == 1:
        return json_response(predictions[0])
    return json_response(PredictionList(model=model, version=loaded.version, predictions=predictions,
                                        count=len(predictions)))
