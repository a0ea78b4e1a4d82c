"""Micro-batching across concurrent callers: what lets one model serve many requests at a forward each.

Requests queue; the worker takes the first, waits at most max_wait for others with the same options, up to a
budget of tokens (and items), then runs them as one call in its own thread, off the event loop, and hands each
caller its own results in its own order. A lone request waits max_wait at most; under load a batch fills before
that. Knows nothing of models or HTTP: `run` is any function from a list of items (and the options) to one result
per item, in order (serve.py gives the run's predictor).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    items: list[Any]
    cost: int
    key: Hashable
    future: asyncio.Future[list[Any]]
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """One worker thread running batches of queued requests (a model is used by one batch at a time)."""

    def __init__(
        self,
        run: Callable[[list[Any], Hashable], Sequence[Any]],
        max_tokens: int,
        max_items: int,
        max_wait_s: float,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        """on_batch(items, tokens, seconds) is told of every batch run (for the server's metrics)."""
        self.run, self.max_tokens, self.max_items, self.max_wait_s = run, max_tokens, max_items, max_wait_s
        self.on_batch = on_batch
        self.queue: deque[_Request] = deque()
        self.wake = asyncio.Event()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tunesmith-batch")
        self.task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self.queue)

    def start(self) -> None:
        """The worker, on the running event loop (the app's startup)."""
        self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop after the batch in flight; callers still queued get an error (the server has stopped taking
        requests by then: uvicorn finishes in-flight requests before the app's shutdown).
        """
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for req in self.queue:
            if not req.future.done():
                req.future.set_exception(RuntimeError("the server is shutting down"))
        self.queue.clear()
        self.pool.shutdown(wait=True)

    async def submit(self, items: list[Any], cost: int, key: Hashable = None) -> list[Any]:
        """One result per item, in order, once a batch with them has run."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.queue.append(_Request(items, cost, key, future))
        self.wake.set()
        return await future

    async def _work(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
            first = self.queue[0]
            deadline = first.queued + self.max_wait_s
            while time.perf_counter() < deadline and not self._full(first.key):
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), deadline - time.perf_counter())
                except asyncio.TimeoutError:
                    break
            batch = self._take(first.key)
            live = [r for r in batch if not r.future.done()]  # a caller that timed out is not run
            if not live:
                continue
            items = [x for r in live for x in r.items]
            started = time.perf_counter()
            try:
                results = await asyncio.get_running_loop().run_in_executor(self.pool, self.run, items, first.key)
            except Exception as error:  # noqa: BLE001 (the callers get it; the worker lives on)
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(error)
                continue
            if self.on_batch is not None:
                self.on_batch(len(items), sum(r.cost for r in live), time.perf_counter() - started)
            at = 0
            for r in live:
                if not r.future.done():
                    r.future.set_result(list(results[at : at + len(r.items)]))
                at += len(r.items)

    def _full(self, key: Hashable) -> bool:
        """Whether the queued requests with this key already fill a batch."""
        tokens = items = 0
        for r in self.queue:
            if r.key == key:
                tokens, items = tokens + r.cost, items + len(r.items)
        return tokens >= self.max_tokens or items >= self.max_items

    def _take(self, key: Hashable) -> list[_Request]:
        """Queued requests with this key, oldest first, within the budget (the first always, even alone over it)."""
        taken: list[_Request] = []
        kept: deque[_Request] = deque()
        tokens = items = 0
        for r in self.queue:
            fits = tokens + r.cost <= self.max_tokens and items + len(r.items) <= self.max_items
            if r.key == key and (not taken or fits):
                taken.append(r)
                tokens, items = tokens + r.cost, items + len(r.items)
            else:
                kept.append(r)
        self.queue = kept
        return taken
