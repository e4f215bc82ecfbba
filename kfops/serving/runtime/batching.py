"""Adaptive batching: requests that arrive together share one model call.

A batch is dispatched as soon as one of these holds:

* it holds ``max_batch_size`` rows;
* a whole event-loop tick went by without a new request joining it (nothing else is arriving, so
  waiting would only add latency: at concurrency 1 a request never waits for a companion);
* ``max_latency_s`` passed since its first request joined (the cap under a steady stream).

In *inline* mode (no executor) the batch function runs on the event loop: right for work of a
few hundred microseconds such as one XGBoost call. With an executor it runs in a worker thread,
one batch at a time; requests that arrive meanwhile form the next batch, so slow work (an
online-store lookup) batches itself harder the slower it is.

The batch function gets the list of items and returns one result per item, in order; a result
that is an exception fails only its own request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class AdaptiveBatcher(Generic[Item, Result]):
    # Ticks without a newcomer before dispatch: a request read from a socket in one tick only runs
    # (and joins) in the next, so one quiet tick is not yet proof that nothing is arriving.
    QUIET_TICKS = 2

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result | BaseException]],
        *,
        max_batch_size: int,
        max_latency_s: float,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
    ):
        """``on_batch(rows)`` is called once per dispatched batch (for metrics)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_latency_s = max(0.0, max_latency_s)
        self._executor = executor
        self._on_batch = on_batch
        self._items: list[Item] = []
        self._sizes: list[int] = []
        self._futures: list[asyncio.Future] = []
        self._rows = 0
        self._joined = False
        self._quiet_ticks = 0
        self._tick_scheduled = False
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending_rows(self) -> int:
        return self._rows

    async def submit(self, item: Item, rows: int = 1) -> Result:
        """Queue one request of ``rows`` rows; returns its own result once its batch ran."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._items or self._busy:
                raise RuntimeError("an AdaptiveBatcher serves one event loop at a time")
            self._loop = loop
        future = loop.create_future()
        self._items.append(item)
        self._sizes.append(rows)
        self._futures.append(future)
        self._rows += rows
        self._joined = True
        if self._rows >= self.max_batch_size:
            self._dispatch()
        else:
            self._schedule_tick()
            if self._deadline is None and self.max_latency_s > 0:
                self._deadline = loop.call_later(self.max_latency_s, self._dispatch)
        return await future

    def _schedule_tick(self) -> None:
        if not self._tick_scheduled and self._items:
            self._tick_scheduled = True
            self._loop.call_soon(self._end_of_tick)

    def _end_of_tick(self) -> None:
        self._tick_scheduled = False
        if not self._items:
            return
        if self.max_latency_s == 0:
            self._dispatch()
            return
        if self._joined:
            self._joined, self._quiet_ticks = False, 0
        else:
            self._quiet_ticks += 1
            if self._quiet_ticks >= self.QUIET_TICKS:
                self._dispatch()
                return
        self._schedule_tick()

    def _take(self) -> tuple[list[Item], list[asyncio.Future], int]:
        """The oldest requests up to max_batch_size rows (always at least one request)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if any(f.done() for f in self._futures):  # requests past their deadline: not worth a model call
            kept = [i for i, f in enumerate(self._futures) if not f.done()]
            self._rows -= sum(self._sizes) - sum(self._sizes[i] for i in kept)
            self._items = [self._items[i] for i in kept]
            self._sizes = [self._sizes[i] for i in kept]
            self._futures = [self._futures[i] for i in kept]
        count, rows = 0, 0
        for size in self._sizes:
            if count and rows + size > self.max_batch_size:
                break
            count, rows = count + 1, rows + size
        items, futures = self._items[:count], self._futures[:count]
        del self._items[:count], self._sizes[:count], self._futures[:count]
        self._rows -= rows
        self._joined, self._quiet_ticks = False, 0
        if self._items:  # leftovers start a fresh window
            if self.max_latency_s > 0:
                self._deadline = self._loop.call_later(self.max_latency_s, self._dispatch)
            self._schedule_tick()
        return items, futures, rows

    def _dispatch(self) -> None:
        if not self._items or self._busy:
            return  # a running (threaded) batch dispatches the pending ones when it finishes
        items, futures, rows = self._take()
        if not items:  # every queued request gave up waiting
            return
        if self._on_batch is not None:
            self._on_batch(rows)
        if self._executor is None:
            try:
                results = self._process(items)
            except Exception as err:  # not swallowed: every request of the batch gets it
                _fail(futures, err)
                return
            _deliver(futures, results)
            return
        self._busy = True
        task = self._loop.run_in_executor(self._executor, self._process, items)
        task.add_done_callback(lambda done: self._threaded_done(done, futures))

    def _threaded_done(self, done: asyncio.Future, futures: list[asyncio.Future]) -> None:
        self._busy = False
        if done.cancelled():
            _fail(futures, asyncio.CancelledError())
        elif done.exception() is not None:
            _fail(futures, done.exception())
        else:
            _deliver(futures, done.result())
        if self._items:
            self._dispatch()


def _fail(futures: list[asyncio.Future], err: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(err)


def _deliver(futures: list[asyncio.Future], results: Sequence[Any]) -> None:
    if len(results) != len(futures):
        _fail(futures, RuntimeError(f"batch function returned {len(results)} results for {len(futures)} items"))
        return
    for future, result in zip(futures, results, strict=True):
        if future.done():  # the request was cancelled (client went away)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
