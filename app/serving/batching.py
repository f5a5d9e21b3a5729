"""Dynamic batching, as TensorFlow Serving and Triton do it.

Concurrent requests for the same model are queued; a worker takes the first, gathers more until
`max_batch_size` rows or until `max_delay_ms` after the first arrived, runs them as one batch off
the event loop, and gives each caller its own rows back. The model's fixed per-call cost is then
paid once per batch instead of once per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from app.serving import metrics

RunBatch = Callable[[np.ndarray], Any]


def take_rows(outputs: Any, start: int, stop: int) -> Any:
    """Rows start:stop of a model output: an array, or a list/tuple/dict of arrays."""
    if isinstance(outputs, dict):
        return {key: take_rows(value, start, stop) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(take_rows(value, start, stop) for value in outputs)
    return outputs[start:stop]


def join_rows(parts: list[Any]) -> Any:
    """The inverse of `take_rows`: concatenate per-item outputs along the batch axis."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: join_rows([part[key] for part in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(join_rows([part[i] for part in parts]) for i in range(len(first)))
    return np.concatenate(parts)


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """One queue and one worker per loaded model version."""

    def __init__(self, run_batch: RunBatch, model: str, max_batch_size: int = 32, max_delay_ms: float = 2.0):
        self.run_batch = run_batch
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False

    async def submit(self, inputs: np.ndarray) -> Any:
        """Queue `inputs` (rows of one request) and wait for their outputs."""
        if self._closed:
            raise RuntimeError(f"the batcher of {self.model} is shut down")
        if self._worker is None:  # started lazily, on the serving event loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.model}")
        pending = _Pending(inputs, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        """Stop taking requests, answer everything already queued, then stop the worker."""
        self._closed = True
        if self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker

    async def _work(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch, rows = [first], len(first.inputs)
            deadline = first.enqueued + self.max_delay
            while rows < self.max_batch_size:
                if self._queue.empty():
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                rows += len(item.inputs)
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        for item in batch:
            metrics.QUEUE_SECONDS.labels(self.model).observe(started - item.enqueued)
        metrics.BATCH_SIZE.labels(self.model).observe(sum(len(item.inputs) for item in batch))
        try:
            outputs = await anyio.to_thread.run_sync(self.run_batch, np.concatenate([i.inputs for i in batch]))
        except Exception as error:
            if len(batch) == 1:
                return self._fail(batch[0], error)
            # One bad item must not fail the others: run each alone, so only it gets the error.
            for item in batch:
                await self._run_alone(item)
            return
        start = 0
        for item in batch:
            stop = start + len(item.inputs)
            if not item.future.done():
                item.future.set_result(take_rows(outputs, start, stop))
            start = stop

    async def _run_alone(self, item: _Pending) -> None:
        try:
            outputs = await anyio.to_thread.run_sync(self.run_batch, item.inputs)
        except Exception as error:
            return self._fail(item, error)
        if not item.future.done():
            item.future.set_result(outputs)

    @staticmethod
    def _fail(item: _Pending, error: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(error)
