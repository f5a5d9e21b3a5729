"""POST /anomaly: score records (JSON or CSV) by an autoencoder's reconstruction error."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.api.deps import serving
from app.api.query import DecimalNumber, ModelQuery, documented, model_field, read_query
from app.api.records import RECORDS_REQUEST_BODY, read_records
from app.api.schemas import ERROR_RESPONSES, json_response
from app.errors import BadInput
from app.preprocessing.records import denormalise_records, normalise_records, reconstruction_errors
from app.store.manifest import Manifest

router = APIRouter(prefix="/anomaly", tags=["anomaly"], responses=ERROR_RESPONSES)


class RecordScore(BaseModel):
    """One record's verdict."""

    index: int = Field(description="Position in the request, from 0 (JSON) or among the CSV's records.")
    error: float = Field(description="Reconstruction error: mean squared error of the normalised record.")
    threshold: float
    is_anomaly: bool = Field(description="error > threshold")
    error_ratio: float = Field(description="error / threshold: over 1 means anomalous.")
    reconstruction: list[float] | None = Field(None, description="The model's rebuild, in the record's units.")


class AnomalyScores(BaseModel):
    """Every record's verdict, in the order sent."""

    model: str
    version: int
    threshold: float
    threshold_source: Literal["model", "request"]
    threshold_rule: str | None = Field(None, description="The rule that chose the model's threshold.")
    count: int
    anomalies: int
    results: list[RecordScore]


def anomaly_model_threshold(manifest: Manifest) -> float:
    return float((manifest.model_extra or {})["threshold"])


def threshold_rule(manifest: Manifest) -> str | None:
    """The rule's short name; its full description is in the version's manifest.json."""
    rule = (manifest.model_extra or {}).get("threshold_rule") or {}
    return rule.get("rule") if isinstance(rule, dict) else str(rule)


def score_results(
    inputs: np.ndarray, outputs: np.ndarray, threshold: float,
    preprocessing: dict, with_reconstruction: bool,
) -> list[RecordScore]:
    errors = reconstruction_errors(inputs, outputs)
    ratios = errors / threshold
    if not np.isfinite(ratios).all():  # JSON has no infinity: the answer would hold nulls
        index = int(np.flatnonzero(~np.isfinite(ratios))[0])
        raise BadInput(f"the record at index {index} cannot be scored: its values are too far outside the "
                       f"model's range (the reconstruction error overflows); values as in the dataset are expected")
    rebuilt = denormalise_records(outputs, preprocessing) if with_reconstruction else None
    return [
        RecordScore(index=i, error=float(error), threshold=threshold, is_anomaly=bool(error > threshold),
                    error_ratio=float(ratio),
                    reconstruction=rebuilt[i].tolist() if rebuilt is not None else None)
        for i, (error, ratio) in enumerate(zip(errors, ratios, strict=True))
    ]


# Below this an error / threshold ratio can overflow to infinity, which JSON cannot carry.
MIN_THRESHOLD = 1e-12


class AnomalyQuery(ModelQuery):
    model: str = model_field("ecg", "An anomaly model in /models.")
    threshold: DecimalNumber | None = Field(None, ge=MIN_THRESHOLD, allow_inf_nan=False,
                                    description="Override the model's threshold for this call (at least 1e-12).")
    reconstruction: bool = Field(False, description="Also return each record's reconstruction.")


@router.post("", response_model=AnomalyScores, openapi_extra=documented(AnomalyQuery, **RECORDS_REQUEST_BODY))
async def score_records(request: Request) -> Response:
    """Score records (JSON `records`/`record`, or CSV one per line); error over the threshold = anomaly."""
    store, settings = serving(request)
    query = read_query(request, AnomalyQuery)
    model, threshold, reconstruction = query.model, query.threshold, query.reconstruction
    loaded = store.get(model, query.version, task="anomaly")
    manifest = loaded.manifest
    records = await read_records(request, settings, manifest.input_spec.shape[0])
    inputs = normalise_records(records, manifest.preprocessing)
    outputs = np.asarray(await loaded.infer(inputs))
    chosen = threshold if threshold is not None else anomaly_model_threshold(manifest)
    results = score_results(inputs, outputs, chosen, manifest.preprocessing, reconstruction)
    return json_response(AnomalyScores(
        model=model, version=loaded.version, threshold=chosen,
        threshold_source="request" if threshold is not None else "model", threshold_rule=threshold_rule(manifest),
        count=len(results), anomalies=sum(r.is_anomaly for r in results), results=results,
    ), exclude_none=True)
