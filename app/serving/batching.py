"""Dynamic batching, as TensorFlow Serving and Triton do it.

Concurrent requests for the same model are queued; a worker takes the first, gathers more until
`max_batch_size` rows or until `max_delay_ms` after the first arrived, runs them as one batch off
the event loop, and gives each caller its own rows back. The model's fixed per-call cost is then
paid once per batch instead of once per request.

The batches run on the batcher's own threads: the event loop hands a batch over with one queue put
and gets every answer back with one callback, and a request's input preparation (decoding an
upload, say) can run there too, on the other core, instead of on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.serving import metrics

RunBatch = Callable[[np.ndarray], Any]
Prepare = Callable[[Any], np.ndarray]


def prepare_together(prepare: Prepare, inputs: list[Any]) -> list[np.ndarray | Exception]:
    """Several requests' raw inputs made into rows by one `prepare`: each request's rows, or the
    error that is its alone. A `prepare` with a `many` method does them in one call (the uploads of
    one batch prepared as one stack); otherwise, and if `many` itself fails, one by one."""
    many = getattr(prepare, "many", None)
    if many is not None:
        try:
            return many(inputs)
        except Exception:  # noqa: S110 - one by one names the culprit
            pass
    results: list[np.ndarray | Exception] = []
    for one in inputs:
        try:
            results.append(prepare(one))
        except Exception as error:
            results.append(error)
    return results


def take_rows(outputs: Any, start: int, stop: int) -> Any:
    """Rows start:stop of a model output: an array, or a list/tuple/dict of arrays."""
    if isinstance(outputs, dict):
        return {key: take_rows(value, start, stop) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(take_rows(value, start, stop) for value in outputs)
    return outputs[start:stop]


@dataclass
class _Pending:
    inputs: Any  # rows (an array), or raw inputs that `prepare` turns into rows
    future: asyncio.Future
    rows: int
    prepare: Prepare | None = None
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


class DynamicBatcher:
    """One queue, one gathering task and `max_in_flight` batch threads per loaded model version."""

    def __init__(self, run_batch: RunBatch, model: str, max_batch_size: int = 32, max_delay_ms: float = 2.0,
                 max_in_flight: int = 2):
        self.run_batch = run_batch
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_delay_ms = max_delay_ms
        self.max_delay = max_delay_ms / 1000.0
        # Batches running at once: while one computes, the next is gathered and started, so the
        # cores never wait on the gathering (Triton's "instance count").
        self.max_in_flight = max(1, int(max_in_flight))
        self._slots: asyncio.Semaphore | None = None
        self._queue: collections.deque[_Pending | None] = collections.deque()
        self._arrival: asyncio.Future | None = None  # set when an item arrives while the worker waits
        self._worker: asyncio.Task | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        # This model's series, looked up once: `labels()` costs microseconds on every request.
        self._queue_seconds = metrics.QUEUE_SECONDS.labels(model)
        self._batch_rows = metrics.BATCH_SIZE.labels(model)

    async def submit(self, inputs: Any, prepare: Prepare | None = None, rows: int | None = None) -> Any:
        """Queue one request's rows and wait for their outputs.

        With `prepare`, `inputs` is raw (uploaded bytes, say): `prepare(inputs)` makes the rows on
        the batch thread, and its error, if any, goes to this request alone; `rows` says how many
        it will make (for `max_batch_size`)."""
        if self._closed:
            raise RuntimeError(f"the batcher of {self.model} is shut down")
        loop = asyncio.get_running_loop()
        if self._worker is None:  # started lazily, on the serving event loop
            self._start(loop)
        count = rows if rows is not None else len(inputs)
        pending = _Pending(inputs, loop.create_future(), count, prepare)
        self._put(pending)
        return await pending.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._worker = loop.create_task(self._work(), name=f"batcher-{self.model}")
        for index in range(self.max_in_flight):
            thread = threading.Thread(target=self._serve_batches, name=f"batch-{self.model}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
        """Stop taking requests, answer everything already queued, then stop the worker and threads."""
        self._closed = True
        if self._worker is None:
            return
        self._put(None)
        await self._worker
        for _ in range(self.max_in_flight):  # every slot back: every batch answered
            await self._slots.acquire()
        for _ in self._threads:
            self._jobs.put(None)
        await asyncio.sleep(0)  # the answered callers resume before the close returns

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is False:
                continue
            if first is None:
                break
            batch, rows = [first], first.rows
            deadline = first.enqueued + self.max_delay
            while rows < self.max_batch_size:
                item = await self._next(deadline - time.perf_counter())
                if item is False:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                rows += item.rows
            await self._slots.acquire()
            started = time.perf_counter()
            for item in batch:
                self._queue_seconds.observe(started - item.enqueued)
            self._batch_rows.observe(rows)
            self._jobs.put((loop, batch))

    # --- on a batch thread --------------------------------------------------------------------

    def _serve_batches(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, batch = job
            try:
                outcomes = self._compute(batch)
            except Exception as error:  # a bug, not bad input: its callers get the error, never a hang
                outcomes = [_Outcome(error=error) for _ in batch]
            try:
                loop.call_soon_threadsafe(self._deliver, batch, outcomes)
            except RuntimeError:  # the loop is gone (interpreter shutting down): nobody waits
                return

    def _prepare(self, batch: list[_Pending], outcomes: list[_Outcome]) -> list[np.ndarray | None]:
        """Every item's rows; an item whose input is bad gets its error and no rows. Items with equal
        `prepare`s (the same model's upload preparation, say) are prepared together."""
        inputs: list[np.ndarray | None] = [None] * len(batch)
        groups: list[tuple[Prepare, list[int]]] = []
        for index, item in enumerate(batch):
            if item.prepare is None:
                inputs[index] = item.inputs
                continue
            for prepare, members in groups:
                if prepare == item.prepare:
                    members.append(index)
                    break
            else:
                groups.append((item.prepare, [index]))
        for prepare, members in groups:
            results = prepare_together(prepare, [batch[i].inputs for i in members])
            for index, result in zip(members, results, strict=True):
                if isinstance(result, Exception):
                    outcomes[index].error = result
                else:
                    inputs[index] = result
        return inputs

    def _compute(self, batch: list[_Pending]) -> list[_Outcome]:
        outcomes = [_Outcome() for _ in batch]
        inputs = self._prepare(batch, outcomes)
        live = [i for i, outcome in enumerate(outcomes) if outcome.error is None]
        if not live:
            return outcomes
        try:
            outputs = self.run_batch(np.concatenate([inputs[i] for i in live]))
        except Exception as error:
            if len(live) == 1:
                outcomes[live[0]].error = error
                return outcomes
            # One bad item must not fail the others: run each alone, so only it gets the error.
            for i in live:
                try:
                    outcomes[i].value = self.run_batch(inputs[i])
                except Exception as alone_error:
                    outcomes[i].error = alone_error
            return outcomes
        start = 0
        for i in live:
            stop = start + len(inputs[i])
            outcomes[i].value = take_rows(outputs, start, stop)
            start = stop
        return outcomes

    # --- back on the event loop ---------------------------------------------------------------

    def _deliver(self, batch: list[_Pending], outcomes: list[_Outcome]) -> None:
        self._slots.release()
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():  # the caller went away
                continue
            if outcome.error is not None:
                item.future.set_exception(outcome.error)
            else:
                item.future.set_result(outcome.value)
