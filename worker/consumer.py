"""The consumer: claims inbound items, classifies them in the sandbox, applies the decision.

Promise 2: an item is marked done (acknowledged) only after its decision is committed;
a redelivered item finds its event and changes nothing twice.
Promise 4: an item that cannot be handled is retried with backoff and, after
`max_attempts`, parked as `failed` with its error; the worker keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Protocol

from config import Settings
from handlers.apply import UnitOfWork, apply
from handlers.plan import BouncePolicy
from handlers.model import Decision, Inbound
from worker.pool import ClassifyFailed, ClassifyTimeout
from worker.queue import Claimed

log = logging.getLogger("unsubd.consumer")

Classify = Callable[[Inbound, datetime], Awaitable[Decision]]


class InboundQueue(Protocol):
    arrived: asyncio.Event

    async def claim(self, limit: int) -> list[Claimed]: ...
    async def done(self, item_id: str) -> None: ...
    async def retry(self, item_id: str, error: str, attempts: int) -> float: ...
    async def park(self, item_id: str, error: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What the queue should do with an item: done (ack), retry later, or park (dead-letter)."""

    action: str                   # "done", "retry" or "park"
    error: str = ""

    @classmethod
    def done(cls) -> Outcome:
        return cls("done")

    @classmethod
    def retry(cls, error: str) -> Outcome:
        return cls("retry", error)

    @classmethod
    def park(cls, error: str) -> Outcome:
        return cls("park", error)


@dataclass
class Counters:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    parked: int = 0
    updates: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Consumer:
    def __init__(self, settings: Settings, queue: InboundQueue | None, classify: Classify,
                 unit_of_work: Callable[[], UnitOfWork], clock: Callable[[], datetime],
                 on_applied: Callable[[], None] | None = None) -> None:
        self._settings = settings.consumer
        self._queue = queue
        self._classify = classify
        self._uow = unit_of_work
        self._clock = clock
        self._on_applied = on_applied or (lambda: None)
        self._unverified_per_hour = settings.unverified_optouts_per_hour
        self._policy = BouncePolicy(threshold=settings.bounces.soft_threshold,
                                    window=timedelta(days=settings.bounces.soft_window_days))
        self.counters = Counters()

    async def run(self, stopping: asyncio.Event) -> None:
        """Process items of the embedded queue until `stopping` is set, then finish the ones in flight."""
        assert self._queue is not None, "run() drives the embedded queue; RabbitMQ calls handle()"
        in_flight: set[asyncio.Task[None]] = set()
        finished = asyncio.Event()

        def _done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            finished.set()

        limit = self._settings.concurrency
        while not stopping.is_set():
            finished.clear()                  # before looking at in_flight: no finish goes unseen
            room = limit - len(in_flight)
            if room > 0:
                self._queue.arrived.clear()   # before claiming: no arrival goes unseen
                claimed: list[Claimed] = []
                try:
                    claimed = await self._queue.claim(room)
                except Exception as exc:      # noqa: BLE001 - the database may be briefly away
                    log.warning("claim failed: %s", type(exc).__name__)
                for c in claimed:
                    task = asyncio.create_task(self.process(c))
                    in_flight.add(task)
                    task.add_done_callback(_done)
                if claimed and len(claimed) == room:
                    continue                  # a full batch: more may be due once a slot frees
            # With every slot taken, only a finished item (or stopping) is worth waking for;
            # waking on arrivals then would spin, since nothing could be claimed.
            events = [stopping, finished] + ([self._queue.arrived] if len(in_flight) < limit else [])
            waiters = [asyncio.create_task(e.wait()) for e in events]
            await asyncio.wait(waiters, timeout=self._settings.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def handle(self, item: Inbound, attempts: int) -> Outcome:
        """Classify and apply one item; say what its queue should do with it.

        The queue acts on the outcome (embedded: mark done / retry later / park;
        RabbitMQ: ack / nack / dead-letter with the error). `attempts` counts this one.
        """
        try:
            decision = await self._classify(item, self._clock())
        except ClassifyTimeout as exc:
            # The same bytes hit the same limit again: retrying only burns CPU.
            return self._park_outcome(f"classify: {exc}")
        except ClassifyFailed as exc:
            return self._failed(f"classify: {exc}", attempts)
        try:
            applied = await apply(decision, self._uow(), self._clock(), self._policy, self._unverified_per_hour)
        except Exception as exc:              # noqa: BLE001 - any failure is retried, then parked
            return self._failed(f"apply: {type(exc).__name__}: {exc}", attempts)
        c = self.counters
        if applied.duplicate:
            c.duplicates += 1
        else:
            c.applied += 1
            c.updates += applied.updates
            c.by_kind[decision.kind.value] = c.by_kind.get(decision.kind.value, 0) + 1
            if applied.updates:
                self._on_applied()
        log.info("applied", extra={"item_id": item.id, "kind": decision.kind.value, "reason": decision.reason,
                                   "updates": applied.updates, "duplicate": applied.duplicate})
        return Outcome.done()

    async def process(self, claimed: Claimed) -> None:
        """Handle one item of the embedded queue and record the outcome there."""
        item = claimed.item
        outcome = await self.handle(item, claimed.attempts)
        try:
            if outcome.action == "done":
                await self._queue.done(item.id)
            elif outcome.action == "retry":
                delay = await self._queue.retry(item.id, outcome.error, claimed.attempts)
                log.warning("will retry in %.1fs: %s", delay, outcome.error[:200], extra={"item_id": item.id})
            else:
                await self._queue.park(item.id, outcome.error)
                log.error("parked: %s", outcome.error[:200], extra={"item_id": item.id})
        except Exception as exc:              # noqa: BLE001 - the lease runs out and the item comes back
            log.warning("recording the outcome failed, item will be redelivered: %s", type(exc).__name__,
                        extra={"item_id": item.id})

    def _failed(self, error: str, attempts: int) -> Outcome:
        if attempts >= self._settings.max_attempts:
            return self._park_outcome(f"{error} (after {attempts} attempts)")
        self.counters.retried += 1
        return Outcome.retry(error)

    def _park_outcome(self, error: str) -> Outcome:
        self.counters.parked += 1
        return Outcome.park(error)
