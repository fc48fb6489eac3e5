"""Group commit (GroupCommit): concurrent submissions gathered into one flush, so that under
load one transaction, and one fsync, carries many items."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Gathers concurrent submissions into one `flush(batch)` call: group commit.

    `submit(x)` returns only after the flush that carried `x` returned, with that
    flush's result for `x` (or its exception). Whatever is submitted while a flush is
    running goes into the next one, so under load one transaction (one fsync) carries
    many items, and an item submitted alone is flushed at once: no timer, no added
    latency. `flush` returns one result per item, in order; a result that is an
    exception is raised to that item's submitter only. With `parallel` > 1, that many
    flushes may run at once (PostgreSQL runs transactions side by side; SQLite has one
    writer, so there it stays 1).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | BaseException]]], max_batch: int = 256,
                 parallel: int = 1) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._parallel = parallel
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Items submitted and not yet taken into a flush."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._parallel:
            task = asyncio.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                batch = [(x, f) for x, f in batch if not f.cancelled()]   # its session has gone
                if not batch:
                    continue
                self.flushes += 1
                self.items += len(batch)
                try:
                    results = await self._flush([x for x, _ in batch])
                except Exception as exc:              # noqa: BLE001 - every submitter of the batch hears it
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for (_, f), result in zip(batch, results, strict=True):
                    if f.done():
                        continue
                    if isinstance(result, BaseException):
                        f.set_exception(result)
                    else:
                        f.set_result(result)
        except BaseException as exc:                  # cancelled (loop closing): fail what is left
            for _, f in batch + self._pending:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else RuntimeError("group commit stopped"))
            self._pending.clear()
            raise
        finally:
            # At once, not in a done callback: a submit arriving between this runner's
            # last look at `_pending` and such a callback would otherwise find no runner.
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
