"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.schemas import error_responses

router = APIRouter(tags=["health"], responses=error_responses(500))


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def read_metrics() -> Response:
    """Requests and latency per endpoint and model, batch sizes, queue time, model load time."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
