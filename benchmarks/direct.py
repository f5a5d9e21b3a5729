"""The service's own CPU per request, without HTTP: the ASGI app called directly by concurrent callers.

    python -m benchmarks.direct digits ecg [--callers 16] [--requests 250]

For each named scenario of `benchmarks.serve` (digits, fashion, ecg, words, ...), the model
request and then its no-model baseline are sent straight to the app's ASGI interface (no sockets,
no load generator sharing the cores), and the CPU each of the server's threads spent is read from
/proc: the event loop (MainThread), the batch threads, and all threads together. It shows where a
model endpoint's time goes, with far less noise than a run over HTTP; Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

from app.config import Settings
from app.main import create_app
from benchmarks.machine import describe_machine
from benchmarks.serve import Request, scenarios, task_cpu_seconds


def thread_seconds() -> dict[str, float]:
    """CPU seconds of each named Python thread, and of every thread of the process ("all")."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds = {"all": 0.0}
    for task in Path("/proc/self/task").iterdir():
        used = task_cpu_seconds(task)
        seconds["all"] += used
        if int(task.name) in names:
            seconds[names[int(task.name)]] = seconds.get(names[int(task.name)], 0.0) + used
    return seconds


def asgi_scope(request: Request) -> dict:
    path, _, query = request.path.partition("?")
    headers = [(b"host", b"bench")]
    if request.content_type:
        headers.append((b"content-type", request.content_type.encode()))
    if request.body:
        headers.append((b"content-length", str(len(request.body)).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def call(app, request: Request) -> None:
    delivered = False
    status: list[int] = []

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(asgi_scope(request), receive, send)
    if status != [200]:
        raise RuntimeError(f"{request.path} answered {status}")


async def measure(app, request: Request, callers: int, requests: int) -> tuple[float, dict[str, float]]:
    """Requests per second and CPU µs per request of each thread, `callers` at a time."""
    async def caller(count: int) -> None:
        for _ in range(count):
            await call(app, request)

    await asyncio.gather(*(caller(max(1, requests // 5)) for _ in range(callers)))  # warm up
    before, started = thread_seconds(), time.perf_counter()
    await asyncio.gather(*(caller(requests) for _ in range(callers)))
    elapsed, after = time.perf_counter() - started, thread_seconds()
    total = callers * requests
    return total / elapsed, {name: (after[name] - before.get(name, 0.0)) / total * 1e6 for name in after}


async def main(names: list[str], callers: int, requests: int) -> None:
    settings = Settings(BENCHMARK_BASELINES=True, RELOAD_INTERVAL_S=0)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        store = app.state.store
        models = {name: {"labels": store.get(name).manifest.labels} for name in store.names()}
        print(describe_machine())
        for scenario in scenarios(models):
            if scenario.name not in names:
                continue
            for label, request in (("model", scenario.request), ("baseline", scenario.baseline)):
                if request is None:
                    continue
                rate, cpu = await measure(app, request, callers, requests)
                threads = ", ".join(f"{name} {value:.0f}" for name, value in sorted(cpu.items())
                                    if value >= 1 and name != "all")
                print(f"{scenario.name} {label}: {rate:,.0f} requests/s; CPU µs per request: all {cpu['all']:.0f} "
                      f"({threads})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="Scenarios of benchmarks.serve: digits, fashion, ecg, words, ...")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--requests", type=int, default=250, help="Per caller.")
    args = parser.parse_args()
    asyncio.run(main(args.names, args.callers, args.requests))
