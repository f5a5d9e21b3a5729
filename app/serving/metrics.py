"""Prometheus metrics, in the process-wide registry (one set per worker process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("labnets_requests_total", "HTTP requests", ["endpoint", "model", "status"])
REQUEST_SECONDS = Histogram(
    "labnets_request_seconds", "HTTP request latency", ["endpoint", "model"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "labnets_batch_rows", "Rows per model call", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_SECONDS = Histogram(
    "labnets_queue_seconds", "Time a request waited for its batch", ["model"], buckets=LATENCY_BUCKETS
)
# The request state's key for the model that served a request (`read_query` records the one the
# query names, or the route's default): the request metrics label it so, read once the app answered.
SERVED_MODEL = "served_model"
MODEL_LOAD_SECONDS = Gauge("labnets_model_load_seconds", "Time to load and warm a version", ["model", "version"])
