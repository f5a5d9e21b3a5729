"""Event-loop CPU of reading a query string: FastAPI's declared parameters against one pydantic model.

    python -m benchmarks.query [--requests 5000]

Two routes of one small app take the same four parameters as /anomaly, one declared to FastAPI
parameter by parameter, one read by `app.api.query.read_query`; a third reads none. The ASGI app
is called directly (no HTTP), so the figures are the routing and the query alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi import Request as HttpRequest
from fastapi.responses import Response

from app.api.anomaly import AnomalyQuery
from app.api.query import read_query
from benchmarks.direct import call
from benchmarks.machine import describe_machine
from benchmarks.serve import Request

app = FastAPI()


@app.post("/declared")
async def declared(
    model: Annotated[str, Query(max_length=64)] = "ecg",
    version: Annotated[int | None, Query(ge=1)] = None,
    threshold: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    reconstruction: Annotated[bool, Query()] = False,
) -> Response:
    return Response(b"{}")


@app.post("/model")
async def one_model(request: HttpRequest) -> Response:
    read_query(request, AnomalyQuery)
    return Response(b"{}")


@app.post("/none")
async def no_query() -> Response:
    return Response(b"{}")


async def cpu_microseconds(request: Request, requests: int) -> float:
    for _ in range(requests // 10):
        await call(app, request)
    started = time.process_time()
    for _ in range(requests):
        await call(app, request)
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int) -> None:
    query = "model=ecg&threshold=0.5"
    print(describe_machine())
    for path in ("/none", "/declared", "/model"):
        microseconds = await cpu_microseconds(Request("POST", f"{path}?{query}"), requests)
        print(f"{path:10s} ?{query}: {microseconds:.1f} µs per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    asyncio.run(main(parser.parse_args().requests))
