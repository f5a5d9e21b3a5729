"""Dynamic batching, as TensorFlow Serving and Triton do it.

Concurrent requests for the same model are queued; a worker takes the first, gathers more until
`max_batch_size` rows or until `max_delay_ms` after the first arrived, runs them as one batch off
the event loop, and gives each caller its own rows back. The model's fixed per-call cost is then
paid once per batch instead of once per request.
"""

from __future__ import annotations

import asyncio
import collections
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

    def __init__(self, run_batch: RunBatch, model: str, max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 max_in_flight: int = 2):
        self.run_batch = run_batch
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        # Batches running at once: while one computes, the next is gathered and started, so the
        # cores never wait on the gathering (Triton's "instance count").
        self.max_in_flight = max(1, int(max_in_flight))
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._queue: collections.deque[_Pending | None] = collections.deque()
        self._arrival: asyncio.Future | None = None  # set when an item arrives while the worker waits
        self._worker: asyncio.Task | None = None
        self._closed = False

    async def submit(self, inputs: np.ndarray) -> Any:
        """Queue `inputs` (rows of one request) and wait for their outputs."""
        if self._closed:
            raise RuntimeError(f"the batcher of {self.model} is shut down")
        loop = asyncio.get_running_loop()
        if self._worker is None:  # started lazily, on the serving event loop
            self._slots = asyncio.Semaphore(self.max_in_flight)
            self._worker = loop.create_task(self._work(), name=f"batcher-{self.model}")
        pending = _Pending(inputs, loop.create_future())
        self._put(pending)
        return await pending.future

    def _put(self, item: _Pending | None) -> None:
        self._queue.append(item)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def _next(self, timeout: float | None) -> _Pending | None | bool:
        """The next queued item; False if none arrived within `timeout` (None: wait for ever).

        A plain future woken by `submit` (and by a timer) is much cheaper per request than
        `asyncio.wait_for` on a queue, which creates a task each time.
        """
        if not self._queue:
            if timeout is not None and timeout <= 0:
                return False
            loop = asyncio.get_running_loop()
            self._arrival = loop.create_future()
            timer = None if timeout is None else loop.call_later(
                timeout, lambda f=self._arrival: f.done() or f.set_result(None))
            await self._arrival
            if timer is not None:
                timer.cancel()
            self._arrival = None
            if not self._queue:
                return False
        return self._queue.popleft()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop taking requests, answer everything already queued, then stop the worker."""
        self._closed = True
        if self._worker is not None:
            self._put(None)
            await self._worker

    async def _work(self) -> None:
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is False:
                continue
            if first is None:
                break
            batch, rows = [first], len(first.inputs)
            deadline = first.enqueued + self.max_delay
            while rows < self.max_batch_size:
                item = await self._next(deadline - time.perf_counter())
                if item is False:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                rows += len(item.inputs)
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._run_in_slot(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if self._running:  # shutting down: answer what is already running
            await asyncio.gather(*self._running)

    async def _run_in_slot(self, batch: list[_Pending]) -> None:
        try:
            await self._run(batch)
        finally:
            self._slots.release()

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
