"""Concurrent calls of one kind served by one batch call (group commit).

Under load many conversations want the same statement at once (record a send, give a lease
back). A `Batcher` runs the first call at once; calls that arrive while a batch is in flight
wait and go out together in the next one. Nothing waits on a timer: when the gateway is
idle a batch holds one call, and under load batches grow with the load, each costing one
round trip instead of one per call.

A batch that fails is retried one call at a time, so a call the database refuses fails
alone and never takes the others with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, MutableMapping, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Calls `run(items)` (one result per item, in order) for whatever calls are waiting."""

    def __init__(self, run: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.calls = 0

    async def __call__(self, item: Item) -> Result:
        if not self._running:
            return await self._alone(item)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        return await future

    async def _alone(self, item: Item) -> Result:
        """Nothing in flight: the caller runs its own batch of one (no task to hand it to)."""
        self._running = True
        try:
            self.batches += 1
            self.calls += 1
            return (await self._checked([item]))[0]
        finally:
            self._running = False
            if self._waiting:
                self._start()

    async def _checked(self, items: list[Item]) -> Sequence[Result]:
        """One call of `run`, with one result per item or an error."""
        results = await self._run(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch of {len(items)} answered with {len(results)} results")
        return results

    def _start(self) -> None:
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        self._running = True
        task = asyncio.get_running_loop().create_task(self._serve(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            self.batches += 1
            self.calls += len(batch)
            try:
                results = await self._checked([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001  (handed to the callers, who see it as their own)
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    return
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), type(exc).__name__)
                for item, future in batch:
                    try:
                        (result,) = await self._checked([item])
                    except Exception as single:  # noqa: BLE001  (the caller's own failure)
                        _settle(future, exc=single)
                    else:
                        _settle(future, result)
                return
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)
        except BaseException as exc:  # cancelled mid-batch (shutdown): nobody may wait forever
            for _, future in batch:
                _settle(future, exc=exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        finally:
            self._running = False
            if self._waiting:
                self._start()


def shared(store: MutableMapping[Any, Any], key: Hashable, make: Callable[[], Batcher[Item, Result]]
           ) -> Batcher[Item, Result]:
    """The batcher kept in `store` (a process's `Services.extras`) under `key`, made on first use."""
    batcher = store.get(key)
    if not isinstance(batcher, Batcher):
        batcher = store[key] = make()
    return batcher


def _settle(future: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return  # the caller was cancelled; its item may or may not have been applied
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
