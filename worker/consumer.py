"""The consumer: claims inbound items, classifies them in the sandbox, applies the decision.

Promise 2: an item is marked done (acknowledged) only after its decision is committed;
a redelivered item finds its event and changes nothing twice. Decisions that are ready
at the same time are applied together, in one transaction (group commit, see
worker.db.GroupCommit); an embedded-queue item is marked done in that same transaction.
If such a shared transaction fails, its decisions are applied again one by one, so
one bad decision costs only its own item a retry.
Promise 4: an item that cannot be handled is retried with backoff and, after
`max_attempts`, parked as `failed` with its error; the worker keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Protocol

from config import Settings
from handlers.apply import Applied, UnitOfWork, apply_all
from handlers.plan import BouncePolicy
from handlers.model import Decision, Inbound
from worker.db import GroupCommit
from worker.pool import ClassifyFailed, ClassifyTimeout
from worker.queue import Claimed
from worker.relay import Handoff

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
    recorded: bool = False        # "done" already written to the embedded queue, in the decision's transaction

    @classmethod
    def done(cls, recorded: bool = False) -> Outcome:
        return cls("done", recorded=recorded)

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
                 on_applied: Callable[[], None] | None = None, database: Any = None,
                 handoff: Handoff | None = None) -> None:
        """`database` (a worker.db.Database) lets decisions be applied in its `write`
        transactions, with embedded-queue items marked done there; without it, each
        transaction is a `unit_of_work()` of its own. With `handoff` (and `database`),
        the updates a transaction commits are published by this process at once
        (worker.relay.Handoff) instead of by a relay."""
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
        self._db = database
        self._handoff = handoff if database is not None else None
        # The embedded queue's items are marked done in the decisions' own transaction.
        self._marks_done_in_tx = database is not None and queue is not None and hasattr(queue, "done_in")
        # One transaction at a time per process, on both databases: measured on PostgreSQL
        # (bench/consumer.py --postgres), three side by side ran at half the rate of one,
        # since they wait on each other's contact locks and retry deadlocks, while one
        # carries bigger batches. Processes still run side by side (row locks keep each
        # contact's sequence in order).
        self._applier: GroupCommit[tuple[Decision, str | None], Applied] = GroupCommit(
            self._apply_batch, max_batch=64, parallel=1)

    async def run(self, stopping: asyncio.Event) -> None:
        """Process items of the embedded queue until `stopping` is set, then finish the ones in flight."""
        assert self._queue is not None, "run() drives the embedded queue; RabbitMQ calls handle()"
        in_flight: set[asyncio.Task[None]] = set()
        finished = asyncio.Event()

        def _done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            finished.set()

        limit = self._settings.concurrency
        # Every claim is a write transaction (on SQLite, a commit to disk), so under load
        # items are claimed in batches of at least a quarter of the slots, not one per
        # finished item; with nothing in flight, whatever is due is claimed at once.
        batch = max(1, limit // 4)
        while not stopping.is_set():
            finished.clear()                  # before looking at in_flight: no finish goes unseen
            room = limit - len(in_flight)
            if room >= batch or (room > 0 and not in_flight):
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
            events = [stopping, finished] + ([self._queue.arrived] if room >= batch or not in_flight else [])
            waiters = [asyncio.create_task(e.wait()) for e in events]
            await asyncio.wait(waiters, timeout=self._settings.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def handle(self, item: Inbound, attempts: int, mark_done: bool = False) -> Outcome:
        """Classify and apply one item; say what its queue should do with it.

        The queue acts on the outcome (embedded: mark done / retry later / park;
        RabbitMQ: ack / nack / dead-letter with the error). `attempts` counts this one.
        With `mark_done`, the embedded queue's item is marked done in the transaction
        that applies the decision, and the outcome says so (`recorded`).
        """
        try:
            decision = await self._classify(item, self._clock())
        except ClassifyTimeout as exc:
            # The same bytes hit the same limit again: retrying only burns CPU.
            return self._park_outcome(f"classify: {exc}")
        except ClassifyFailed as exc:
            return self._failed(f"classify: {exc}", attempts)
        mark_done = mark_done and self._marks_done_in_tx
        try:
            applied = await self._applier.submit((decision, item.id if mark_done else None))
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
        return Outcome.done(recorded=mark_done)

    async def _apply_batch(self, batch: list[tuple[Decision, str | None]]) -> list[Applied | BaseException]:
        """Apply the decisions ready now in one transaction; on failure, one transaction each."""
        try:
            return list(await self._apply_together(batch))
        except Exception as exc:              # noqa: BLE001 - sorted out below
            if len(batch) == 1:
                return [exc]
            log.warning("a shared transaction of %d decisions failed (%s); applying them one by one",
                        len(batch), type(exc).__name__)
        results: list[Applied | BaseException] = []
        for entry in batch:
            try:
                results.extend(await self._apply_together([entry]))
            except Exception as exc:          # noqa: BLE001 - this item's own failure
                results.append(exc)
        return results

    async def _apply_together(self, batch: list[tuple[Decision, str | None]]) -> list[Applied]:
        decisions = [d for d, _ in batch]
        done_ids = [item_id for _, item_id in batch if item_id is not None]
        now = self._clock()
        if self._db is None:
            return await apply_all(decisions, self._uow(), now, self._policy, self._unverified_per_hour)
        db = self._db
        # The consumer publishes these updates itself only while it is idle otherwise (one
        # decision, none waiting); under load the relays batch them, at less cost to the
        # consumer's loop (bench/pipeline.py at 200/s).
        handoff = self._handoff if len(batch) == 1 and not self._applier.waiting else None
        claimed_until = handoff.claim_until() if handoff is not None else None
        claimed: list[dict[str, Any]] = []

        async def work(conn: Any) -> list[Applied]:
            uow = db.unit_of_work(joined=conn)
            if claimed_until is not None:
                uow.claimed_until, uow.claimed_rows = claimed_until, claimed
            if done_ids:
                queue: Any = self._queue
                uow.before_commit.append(lambda c: queue.done_in(done_ids, c))
            return await apply_all(decisions, uow, now, self._policy, self._unverified_per_hour)

        applied = await db.write(work)
        if handoff is not None and claimed:
            handoff.submit(claimed)              # committed: publish them now
        return applied

    async def process(self, claimed: Claimed) -> None:
        """Handle one item of the embedded queue and record the outcome there."""
        item = claimed.item
        outcome = await self.handle(item, claimed.attempts, mark_done=self._marks_done_in_tx)
        try:
            if outcome.action == "done":
                if not outcome.recorded:
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
