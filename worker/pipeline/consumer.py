"""The consumer: claims inbound items, classifies them in the sandbox, applies the decision.

Promise 2: an item is marked done (acknowledged) only after its decision is committed;
a redelivered item finds its event and changes nothing twice. Decisions that are ready
at the same time are applied together, in one transaction (group commit, see
worker.store.db.GroupCommit); an embedded-queue item is marked done in that same transaction.
If such a shared transaction fails, its decisions are applied again one by one, so
one bad decision costs only its own item a retry.
Promise 4: an item that cannot be handled is retried with backoff and, after
`max_attempts`, parked as `failed` with its error; the worker keeps running.

An outage is not the item's failure (worker.errors.is_outage: the database unreachable,
a lost connection, a serialisation failure, SQLite busy...). The consumer then pauses
(`OutageGate`): it takes no more work, probes the database with a backoff that grows,
with jitter, up to `outage_backoff_max`, and once the probe succeeds it tries the same
items again, with no attempt counted. An item whose "outage" errors go on while the
probes succeed (the database answers others, not it) is the item's problem after all:
after `max_attempts` such pauses in a row, the failure counts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from functools import partial
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Protocol

from config import Settings
from handlers.state.apply import Applied, UnitOfWork, apply_all
from handlers.state.plan import BouncePolicy
from handlers.classify import SUSPECT
from handlers.model import Decision, Inbound
from worker.store import sent_counts
from worker.store.db import GroupCommit
from worker.errors import is_conflict, is_outage
from worker.pipeline.pool import ClassifyFailed, ClassifyTimeout
from worker.queue.embedded import Claimed
from worker.outbox.relay import Handoff

log = logging.getLogger("unsubd.consumer")

Classify = Callable[[Inbound, datetime], Awaitable[Decision]]


class Timings(Protocol):
    """Where the consumer reports its timings (worker.ingress.metrics.Exporter has both)."""

    classify_seconds: Any
    update_latency: Any


class InboundQueue(Protocol):
    arrived: asyncio.Event

    async def claim(self, limit: int, heavy_limit: int | None = None) -> list[Claimed]: ...
    async def done(self, item_id: str) -> None: ...
    async def retry(self, item_id: str, error: str, attempts: int) -> float: ...
    async def park(self, item_id: str, error: str) -> None: ...


PROBE_TIMEOUT = 10.0              # seconds one probe of the database may take


@dataclass(frozen=True)
class Outcome:
    """What the queue should do with an item: done (ack), retry later, park (dead-letter),
    or release (give it back uncounted: an outage interrupted it and the consumer is stopping)."""

    action: str                   # "done", "retry", "park" or "release"
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

    @classmethod
    def release(cls, error: str) -> Outcome:
        return cls("release", error)


@dataclass
class Counters:
    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    parked: int = 0
    updates: int = 0
    outage_pauses: int = 0        # outages that paused the consumer (one per outage, however many items met it)
    released: int = 0             # items given back uncounted: the consumer stopped during an outage
    recovered: int = 0            # embedded: items of stopped consumers taken back
    by_kind: dict[str, int] = field(default_factory=dict)
    suspect_reports: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUSPECT, 0))  # by evidence flag


class Pause:
    """One outage, from the failure that showed it until a probe succeeded."""

    def __init__(self) -> None:
        self.over = asyncio.Event()
        self.confirmed = False        # a probe failed too: the service was down, not just this item's try


class OutageGate:
    """Pauses work while the database is away; probes it until it answers.

    `trip(exc)` starts a pause (or joins the one running) and returns it; callers wait
    for `pause.over` and try again. The probe waits `outage_backoff_base` doubling up to
    `outage_backoff_max` seconds, each with jitter (half to all of it), and each probe
    is bounded by PROBE_TIMEOUT. Pausing has no end but the service's return or the
    consumer's stop: giving up would mean parking or losing items that are fine.
    """

    def __init__(self, probe: Callable[[], Awaitable[None]], base: float, cap: float,
                 counters: Counters) -> None:
        self._probe = probe
        self._base, self._cap = base, cap
        self._counters = counters
        self._pause: Pause | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> Pause | None:
        """The pause in progress, or None."""
        return self._pause if self._pause is not None and not self._pause.over.is_set() else None

    def trip(self, exc: BaseException) -> Pause:
        pause = self.current
        if pause is not None:
            return pause
        pause = self._pause = Pause()
        self._counters.outage_pauses += 1
        log.warning("outage: %s; pausing until the database answers", _describe(exc))
        self._task = asyncio.create_task(self._probe_until_up(pause), name="outage-probe")
        return pause

    async def _probe_until_up(self, pause: Pause) -> None:
        loop = asyncio.get_running_loop()
        started, n = loop.time(), 0
        while True:
            await asyncio.sleep(min(self._cap, self._base * 2 ** n) * random.uniform(0.5, 1.0))
            try:
                await asyncio.wait_for(self._probe(), PROBE_TIMEOUT)
            except Exception as exc:          # noqa: BLE001 - any failure of the probe
                if is_outage(exc) or isinstance(exc, asyncio.TimeoutError):
                    pause.confirmed = True
                    n += 1
                    continue
                log.warning("the outage probe failed otherwise (%s); resuming", type(exc).__name__)
            break
        pause.over.set()
        log.warning("the database answers again; resuming after %.1f s (%d probes)", loop.time() - started, n + 1)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pause is not None:
            self._pause.over.set()


def _describe(exc: BaseException) -> str:
    """The exception's kind and the first line of its text (no parameters: they may hold addresses)."""
    text = str(getattr(exc, "orig", None) or exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {text}"[:200]


async def _first(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Consumer:
    def __init__(self, settings: Settings, queue: InboundQueue | None, classify: Classify,
                 unit_of_work: Callable[[], UnitOfWork], clock: Callable[[], datetime],
                 on_applied: Callable[[], None] | None = None, database: Any = None,
                 handoff: Handoff | None = None, timings: Timings | None = None) -> None:
        """`database` (a worker.store.db.Database) lets decisions be applied in its `write`
        transactions, with embedded-queue items marked done there; without it, each
        transaction is a `unit_of_work()` of its own. With `handoff` (and `database`),
        the updates a transaction commits are published by this process at once
        (worker.outbox.relay.Handoff) instead of by a relay. `timings` (the app's
        histograms, worker.ingress.metrics.Exporter) is told how long classify took and how
        long an item waited from its acceptance until its decision was committed."""
        self._timings = timings
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
        self.outage = OutageGate(self._probe, self._settings.outage_backoff_base,
                                 self._settings.outage_backoff_max, self.counters)
        # Set when the consumer is to stop: an item waiting out an outage is then released.
        self.stopping = asyncio.Event()

    @property
    def heavy_slots(self) -> int:
        """In-flight slots heavy items may hold: `heavy_concurrency`, but never every slot
        (with `concurrency` 1, the one slot is shared)."""
        c = self._settings
        return max(1, min(c.heavy_concurrency, c.concurrency - 1))

    async def _probe(self) -> None:
        """One empty transaction: the database answers and begins a write."""
        uow = self._uow()
        async with uow:
            pass

    async def _wait_out(self, pause: Pause) -> bool:
        """Wait for `pause` to end; False if the consumer is stopping first."""
        if not pause.over.is_set():
            await _first(pause.over, self.stopping)
        return pause.over.is_set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Process items of the embedded queue until `stopping` is set, then finish the ones in flight.

        At start, and every quarter lease after, it takes back the items of consumers that
        have stopped (`recover`); those (`crashed`) are then handled one at a time, alone.
        While an outage lasts it claims nothing. Heavy items (over `heavy_bytes`) hold at
        most `heavy_slots` of the `concurrency` slots, so ordinary items always find a
        slot and are claimed past heavy ones that wait (issue 22). Order per contact is
        what it was: each update's sequence number is taken when its decision commits,
        under the contact's row lock, so an ordinary item applied before a heavy one that
        arrived earlier (as items in flight together always could be) gets the next number.
        """
        assert self._queue is not None, "run() drives the embedded queue; RabbitMQ calls handle()"
        self.stopping = stopping
        loop = asyncio.get_running_loop()
        in_flight: dict[asyncio.Task[None], str] = {}
        finished = asyncio.Event()
        recover = getattr(self._queue, "recover", None)        # the embedded queue's; a test's may lack them
        claim_crashed = getattr(self._queue, "claim_crashed", None)
        recover_every = min(30.0, self._settings.lease / 4)
        last_recovered = None                 # loop time of the last look for stopped consumers' items
        crashed = claim_crashed is not None   # there may be items of a crash to handle, alone
        alone: asyncio.Task[None] | None = None

        heavy: set[asyncio.Task[None]] = set()    # in flight and over heavy_bytes: the heavy lane

        def _done(task: asyncio.Task[None]) -> None:
            in_flight.pop(task, None)
            heavy.discard(task)
            finished.set()

        def start(c: Claimed) -> asyncio.Task[None]:
            task = asyncio.create_task(self.process(c))
            in_flight[task] = c.item.id
            if len(c.item.raw) > self._settings.heavy_bytes:
                heavy.add(task)
            task.add_done_callback(_done)
            return task

        limit = self._settings.concurrency
        heavy_limit = self.heavy_slots
        lanes = hasattr(self._queue, "heavy_bytes")             # the embedded queue's claim takes heavy_limit
        # Every claim is a write transaction (on SQLite, a commit to disk), so under load
        # items are claimed in batches of at least a quarter of the slots, not one per
        # finished item; with nothing in flight, whatever is due is claimed at once.
        batch = max(1, limit // 4)
        try:
            while not stopping.is_set():
                pause = self.outage.current
                if pause is not None:         # an outage: claim nothing until the database answers
                    await _first(pause.over, stopping)
                    continue
                finished.clear()              # before looking at in_flight: no finish goes unseen
                if recover is not None and (last_recovered is None or loop.time() - last_recovered >= recover_every):
                    try:
                        again, parked = await recover(set(in_flight.values()))
                        # Items of a crash may also be due again now (released, unparked): look.
                        crashed = again > 0 or await self._queue.crashed_due()
                    except Exception as exc:  # noqa: BLE001 - the database may be away
                        if is_outage(exc):
                            self.outage.trip(exc)
                            continue
                        log.warning("taking back stopped consumers' items failed: %s", type(exc).__name__)
                    else:
                        self.counters.recovered += again + parked
                        self.counters.parked += parked
                    last_recovered = loop.time()
                room = limit - len(in_flight)
                if alone is not None and not alone.done():
                    room = 0                  # an item of a crash is in flight: it stays alone
                elif crashed and not in_flight:
                    self._queue.arrived.clear()
                    try:
                        c = await claim_crashed()
                    except Exception as exc:  # noqa: BLE001
                        if is_outage(exc):
                            self.outage.trip(exc)
                            continue
                        log.warning("claim failed: %s", type(exc).__name__)
                        c = None
                    if c is not None:
                        alone = start(c)
                        continue
                    crashed = False
                elif crashed:
                    room = 0                  # let what is in flight finish, then the crash's items, alone
                if room >= batch or (room > 0 and not in_flight):
                    self._queue.arrived.clear()   # before claiming: no arrival goes unseen
                    claimed: list[Claimed] = []
                    try:
                        if lanes:
                            claimed = await self._queue.claim(room, max(0, heavy_limit - len(heavy)))
                        else:
                            claimed = await self._queue.claim(room)
                    except Exception as exc:      # noqa: BLE001 - the database may be briefly away
                        if is_outage(exc):
                            self.outage.trip(exc)
                            continue
                        log.warning("claim failed: %s", type(exc).__name__)
                    for c in claimed:
                        start(c)
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
        finally:
            await self.outage.close()

    async def handle(self, item: Inbound, attempts: int, mark_done: bool = False) -> Outcome:
        """Classify and apply one item; say what its queue should do with it.

        The queue acts on the outcome (embedded: mark done / retry later / park / release;
        RabbitMQ: ack / nack / dead-letter with the error / publish again uncounted).
        `attempts` counts this one. With `mark_done`, the embedded queue's item is marked
        done in the transaction that applies its decision, and the outcome says so
        (`recorded`). An outage pauses the item (and the consumer) and then tries it
        again, uncounted; if the consumer stops meanwhile, the outcome is "release".
        """
        started = time.perf_counter()
        try:
            decision = await self._classify(item, self._clock())
        except ClassifyTimeout as exc:
            # The same bytes hit the same limit again: retrying only burns CPU.
            return self._park_outcome(f"classify: {exc}")
        except ClassifyFailed as exc:
            return self._failed(f"classify: {exc}", attempts)
        if self._timings is not None:
            # Where the decision comes back: with parser processes this includes the hand-over.
            self._timings.classify_seconds.observe(time.perf_counter() - started)
        mark_done = mark_done and self._marks_done_in_tx
        unconfirmed = 0                       # outage pauses after which the database answered at once
        conflicts = 0                         # transactions in each other's way, tried again at once
        while True:
            pause = self.outage.current
            if pause is not None and not await self._wait_out(pause):
                return self._release("the consumer stopped during an outage")
            try:
                applied = await self._applier.submit((decision, item.id if mark_done else None))
                break
            except Exception as exc:          # noqa: BLE001 - an outage waits; anything else is the item's
                error = f"apply: {type(exc).__name__}: {exc}"
                if not is_outage(exc):
                    return self._failed(error, attempts)
                if is_conflict(exc) and conflicts < self._settings.max_attempts:
                    conflicts += 1            # a deadlock or the like: again at once, no pause for all
                    await asyncio.sleep(random.uniform(0, 0.05))
                    continue
                pause = self.outage.trip(exc)
                if not await self._wait_out(pause):
                    return self._release(f"the consumer stopped during an outage ({_describe(exc)})")
                if not pause.confirmed:
                    unconfirmed += 1
                    if unconfirmed >= self._settings.max_attempts:
                        # The database answers, just not for this item: its own failure after all.
                        return self._failed(error, attempts)
        c = self.counters
        if applied.duplicate:
            c.duplicates += 1
        else:
            c.applied += 1
            c.updates += applied.updates
            if self._timings is not None:         # acceptance (SMTP 250, enqueue) to commit: the update is written
                self._timings.update_latency.observe(max(0.0, (self._clock() - item.received_at).total_seconds()))
            c.by_kind[decision.kind.value] = c.by_kind.get(decision.kind.value, 0) + 1
            for flag in decision.evidence.get("suspect") or ():      # forged or implausible reports (issue 22)
                c.suspect_reports[flag] = c.suspect_reports.get(flag, 0) + 1
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
            if len(batch) == 1 or (is_outage(exc) and not is_conflict(exc)):
                return [exc] * len(batch)     # one by one would meet the same outage
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
        # Sent counts from the queue (not consent state) are written in the same transaction
        # as their decision's event (worker.store.sent_counts).
        reports = [r for r in map(sent_counts.carried_by, decisions) if r is not None]

        def write_reports(uow: Any) -> None:
            for counts, reported_by in reports:
                uow.before_commit.append(partial(sent_counts.write, counts=counts, reported_by=reported_by, now=now))

        if self._db is None:
            uow = self._uow()
            write_reports(uow)
            return await apply_all(decisions, uow, now, self._policy, self._unverified_per_hour)
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
            write_reports(uow)
            return await apply_all(decisions, uow, now, self._policy, self._unverified_per_hour)

        applied = await db.write(work)
        if handoff is not None and claimed:
            handoff.submit(claimed)              # committed: publish them now
        return applied

    async def process(self, claimed: Claimed) -> None:
        """Handle one item of the embedded queue and record the outcome there.

        Recording meets an outage like applying does: it waits for the database and
        tries again. If the consumer stops first, the item is left to be taken back
        (`recover`) by the next consumer to start.
        """
        item = claimed.item
        outcome = await self.handle(item, claimed.attempts, mark_done=self._marks_done_in_tx)
        queue: Any = self._queue
        while True:
            try:
                if outcome.action == "done":
                    if not outcome.recorded:
                        await queue.done(item.id)
                elif outcome.action == "retry":
                    delay = await queue.retry(item.id, outcome.error, claimed.attempts)
                    log.warning("will retry in %.1fs: %s", delay, outcome.error[:200], extra={"item_id": item.id})
                elif outcome.action == "release":
                    if hasattr(queue, "release"):
                        await queue.release(item.id, claimed.attempts)
                else:
                    await queue.park(item.id, outcome.error)
                    log.error("parked: %s", outcome.error[:200], extra={"item_id": item.id})
                return
            except Exception as exc:          # noqa: BLE001 - the item is taken back later
                if is_outage(exc) and not self.stopping.is_set():
                    if await self._wait_out(self.outage.trip(exc)):
                        continue
                log.warning("recording the outcome failed, item will be redelivered: %s", type(exc).__name__,
                            extra={"item_id": item.id})
                return

    def _failed(self, error: str, attempts: int) -> Outcome:
        if attempts >= self._settings.max_attempts:
            return self._park_outcome(f"{error} (after {attempts} attempts)")
        self.counters.retried += 1
        return Outcome.retry(error)

    def _park_outcome(self, error: str) -> Outcome:
        self.counters.parked += 1
        return Outcome.park(error)

    def _release(self, error: str) -> Outcome:
        self.counters.released += 1
        return Outcome.release(error)
