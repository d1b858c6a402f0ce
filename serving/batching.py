"""Greedy micro-batching for the ingress: no timer; batches grow only while the model path is busy.

`@serve.batch` closes a batch after a wait timeout and then queues it for a free slot, so under load
many small batches wait behind each other, each paying its own Encoder and Assigner calls. Here a
batch is formed only when a slot is free, from everything queued by then: an idle server sends a
lone request at once (no wait), a busy one sends fewer, larger batches (fewer actor calls).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GreedyBatcher(Generic[T, R]):
    """`await batcher(item)` runs `fn(items) -> results` (same order, same length) on queued items.

    At most `max_in_flight` calls of `fn` run at once, each on up to `max_batch_size` items.
    Items arriving in the same event-loop turn always share a batch.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]], max_batch_size: int = 64,
                 max_in_flight: int = 2) -> None:
        if max_batch_size < 1 or max_in_flight < 1:
            raise ValueError("max_batch_size and max_in_flight must be >= 1")
        self.fn, self.max_batch_size, self.max_in_flight = fn, max_batch_size, max_in_flight
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for tuning

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, fut))
        if not self._scheduled:  # after the other callbacks of this turn: they join the batch
            self._scheduled = True
            loop.call_soon(self._drain)
        return await fut

    def _drain(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self.max_in_flight:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            while self._queue and len(batch) < self.max_batch_size:
                item, fut = self._queue.popleft()
                if not fut.done():  # skip requests cancelled while queued (client went away)
                    batch.append((item, fut))
            if not batch:
                continue
            self._in_flight += 1
            self.batch_sizes.append(len(batch))
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            for (_, fut), r in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(r)
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as e:  # every waiting request gets the error, none hangs
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
        finally:
            self._in_flight -= 1
            self._drain()
