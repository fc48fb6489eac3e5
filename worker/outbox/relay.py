"""The outbox relay: publishes committed updates and marks them published.

Promise 3: every state change is published at least once, in order per contact,
from the transactional outbox. Rows are claimed in id order with SKIP LOCKED (on
PostgreSQL), handed to a Publisher, and marked published in the same transaction
only after the publisher returned: a crash in between publishes them again, with
the same event_id and sequence, which consumers deduplicate on.

The relay wakes as soon as a transaction of its own process commits outbox rows
(Database.on_outbox: the consumer, the HTTP API, the CLI), and on PostgreSQL when any
process does (LISTEN on the channel its NOTIFY goes to); polling every
`relay.poll_interval` is only the fallback.

In production a consumer publishes the rows it commits itself (Handoff): they are
written claimed for `relay.handoff_lease` seconds, relays skip them until then, and
take them as ordinary backlog afterwards if they are still unpublished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Callable, Protocol

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from config import Settings
from worker.store.db import OUTBOX_CHANNEL, Database, WriteConn, among
from worker.store.models import Outbox

_T = Outbox.__table__
# Keyed by PostgreSQL?: there the list is one array parameter, so the statement is the
# same whatever the batch's size (one prepared statement, not one per size).
_MARK_PUBLISHED = {pg: update(_T).where(among(_T.c.id, "ids", pg)).values(published_at=bindparam("b_now"))
                   for pg in (False, True)}
# A consumer's own rows, by event: a relay may have published them already (lease over).
_MARK_HANDED_OFF = {pg: (update(_T).where(among(_T.c.event_id, "event_ids", pg), _T.c.published_at.is_(None))
                         .values(published_at=bindparam("b_now")))
                    for pg in (False, True)}

log = logging.getLogger("unsubd.relay")
RELISTEN_SECONDS = 5.0    # a lost LISTEN connection is tried again at most this often


@dataclass(frozen=True)
class OutboundUpdate:
    id: int
    routing_key: str
    payload: dict[str, Any]


class Publisher(Protocol):
    async def publish(self, updates: list[OutboundUpdate]) -> None:
        """Return only when every update is accepted downstream; raise otherwise."""


class FeedPublisher:
    """Embedded mode: marking a row published is what makes it visible in GET /v1/updates."""

    async def publish(self, updates: list[OutboundUpdate]) -> None:
        return None


class Relay:
    def __init__(self, settings: Settings, db: Database, publisher: Publisher,
                 clock: Callable[[], datetime]) -> None:
        self._settings = settings.relay
        self._db = db
        self.publisher = publisher
        self._clock = clock
        self.wake = asyncio.Event()
        self._feed_changed = asyncio.Event()
        self._listener: AsyncConnection | None = None
        self._listener_lost = False
        self._next_listen = 0.0
        self.published = 0
        db.on_outbox(self.wake.set)
        # Rows a consumer claimed (Handoff) are left to it until its lease runs out.
        self._claim = (select(_T.c.id, _T.c.routing_key, _T.c.payload)
                       .where(_T.c.published_at.is_(None),
                              or_(_T.c.claimed_until.is_(None), _T.c.claimed_until <= bindparam("b_now")))
                       .order_by(_T.c.id).limit(self._settings.batch).with_for_update(skip_locked=True))

    async def drain_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        if self._db.dialect == "postgresql":
            # On the asyncpg connection itself (Database.write): through a SQLAlchemy
            # session the same claim, mark and commit cost the relay about twice the CPU.
            published = await self._db.write(self._claim_and_publish)
        elif not await self.backlog(limit=1):
            # SQLite: a read first, so an idle relay never takes the write lock. On
            # PostgreSQL the claim (SKIP LOCKED) blocks nobody, and the check would cost
            # a round trip per batch.
            return 0
        else:
            # Not Database.write: on a SQLite file that runs in a thread where nothing
            # but the statements may await, and a publisher may.
            async with self._db.transaction() as session:
                published = await self._claim_and_publish(await session.connection())
        if not published:
            return 0
        self.published += published
        self._feed_changed.set()              # wake GET /v1/updates?wait= in this process
        self._feed_changed = asyncio.Event()
        return published

    async def _claim_and_publish(self, conn: WriteConn | AsyncConnection) -> int:
        """In the caller's transaction: claim a batch, publish it, mark it published."""
        rows = (await conn.execute(self._claim, {"b_now": self._clock()})).all()
        if rows:
            await self.publisher.publish(
                [OutboundUpdate(id=r.id, routing_key=r.routing_key, payload=dict(r.payload)) for r in rows])
            await conn.execute(_MARK_PUBLISHED[self._db.dialect == "postgresql"],
                               {"ids": [r.id for r in rows], "b_now": self._clock()})
        return len(rows)

    def feed_changed(self) -> asyncio.Event:
        """An event set the next time this relay marks rows published (then replaced)."""
        return self._feed_changed

    async def drain(self) -> int:
        total = 0
        while n := await self.drain_once():
            total += n
        return total

    @property
    def listening(self) -> bool:
        """PostgreSQL: whether this relay hears other processes' outbox commits now."""
        return self._listener is not None and not self._listener_lost

    async def run(self, stopping: asyncio.Event) -> None:
        """Drain until `stopping` is set; publishing failures back off and retry (nothing is lost)."""
        backoff = self._settings.poll_interval
        await self._listen()
        try:
            await self._run(stopping, backoff)
        finally:
            await self._drop_listener()

    async def _listen(self) -> None:
        """PostgreSQL: LISTEN for outbox commits of other processes. Best effort: polling remains.

        When the listening connection is lost (a database restart), the relay drains at
        once (it may have missed notifications) and listens again on its next round.
        """
        if self._db.dialect != "postgresql":
            return
        await self._drop_listener()
        conn: AsyncConnection | None = None
        try:
            conn = await self._db.engine.connect()
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.add_listener(OUTBOX_CHANNEL, lambda *_: self.wake.set())
            raw.add_termination_listener(lambda *_: self._lost_listener())
        except Exception as exc:              # noqa: BLE001 - the relay still polls
            log.warning("cannot LISTEN for outbox commits, polling only: %s", type(exc).__name__)
            if conn is not None:
                await conn.close()
            self._listener_lost = True
            return
        self._listener, self._listener_lost = conn, False

    def _lost_listener(self) -> None:
        self._listener_lost = True
        self.wake.set()

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:                 # noqa: BLE001 - it is gone already
                await conn.invalidate()

    async def _run(self, stopping: asyncio.Event, backoff: float) -> None:
        while not stopping.is_set():
            self.wake.clear()
            if self._listener_lost and time.monotonic() >= self._next_listen:
                self._next_listen = time.monotonic() + RELISTEN_SECONDS
                await self._listen()
            try:
                n = await self.drain_once()
                backoff = self._settings.poll_interval
            except Exception as exc:          # noqa: BLE001 - the backlog stays in the outbox
                log.warning("relay failed, will retry: %s", type(exc).__name__)
                n, backoff = 0, min(backoff * 2, 30.0)
            if n >= self._settings.batch:
                continue                      # a full batch: more may be waiting
            # Anything committed since the wake flag was cleared above has set it again,
            # so a drain that found fewer rows than a batch needs no second look.
            waiters = [asyncio.create_task(stopping.wait()), asyncio.create_task(self.wake.wait())]
            await asyncio.wait(waiters, timeout=backoff, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        try:
            await self.drain()
        except Exception as exc:              # noqa: BLE001
            log.warning("final drain failed; rows stay in the outbox: %s", type(exc).__name__)

    async def backlog(self, limit: int | None = None) -> int:
        """How many rows wait to be published (at most `limit`, when given: cheaper)."""
        waiting = select(Outbox.id).where(Outbox.published_at.is_(None))
        if limit is not None:
            waiting = waiting.limit(limit)
        async with self._db.sessions() as session:
            return await session.scalar(select(func.count()).select_from(waiting.subquery())) or 0


class Handoff:
    """A consumer's own updates, published right after its commit (production).

    The consumer writes its outbox rows claimed until `claim_until()` (see
    SqlUnitOfWork.claimed_until) and, once the transaction has committed, `submit`s
    them here. A submission is published at once, on one channel in submission order;
    rows submitted while a publish awaits its confirm wait for it, and then go out
    together, as the next publish. Once confirmed, rows are marked published, many
    submissions per UPDATE (`MARK_LINGER`). A failure is only logged: the rows stay in
    the outbox, and a relay publishes them when the lease runs out. Nothing is lost, and
    a copy published twice (a crash between publishing and marking) carries the same
    event_id.

    Rows queued here behind a confirm used to be left to the relays instead. A relay
    hears of them through NOTIFY and claims them in a transaction of its own, which took
    them 4 to 7 ms longer at 100 messages/s (bench/pipeline.py). Between a quarter and
    half of the updates went that way.
    """

    MARK_LINGER = 0.1     # seconds a confirmed row may wait to be marked, with others

    def __init__(self, settings: Settings, db: Database, publisher: Publisher,
                 clock: Callable[[], datetime]) -> None:
        self._db = db
        self._publisher = publisher
        self._clock = clock
        self._lease = timedelta(seconds=settings.relay.handoff_lease)
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirmed: list[str] = []           # event ids published, not yet marked
        self._marker: asyncio.Task[None] | None = None
        self._in_flight = 0                       # publishes not yet confirmed or failed
        self._queued: list[dict[str, Any]] = []   # rows submitted meanwhile: the next publish
        self.published = 0
        self.failed = 0

    def claim_until(self) -> datetime | None:
        """The lease for the rows of a transaction starting now."""
        return self._clock() + self._lease

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Publish these committed rows now, or right after the publish awaiting its
        confirm; returns at once (the caller need not wait)."""
        if not rows:
            return
        if self._in_flight:
            self._queued.extend(rows)
            return
        self._in_flight += 1
        task = asyncio.create_task(self._publish(rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the publishes and marks in flight (before the broker connection closes)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._marker is not None:
            await asyncio.gather(self._marker, return_exceptions=True)

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        """Publish `rows`, then whatever was queued meanwhile, until nothing is left."""
        while rows:
            await self._publish_one(rows)
            rows, self._queued = self._queued, []
            if rows:
                self._in_flight += 1

    async def _publish_one(self, rows: list[dict[str, Any]]) -> None:
        try:
            await self._publisher.publish([OutboundUpdate(id=0, routing_key=r["routing_key"], payload=r["payload"])
                                           for r in rows])
        except Exception as exc:              # noqa: BLE001 - a relay takes them after the lease
            self.failed += len(rows)
            log.warning("publishing %d committed updates failed; a relay publishes them after the lease: %s",
                        len(rows), type(exc).__name__)
            return
        finally:
            self._in_flight -= 1
        self.published += len(rows)
        self._confirmed.extend(r["event_id"] for r in rows)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark())

    async def _mark_published(self, event_ids: list[str], conn: WriteConn) -> None:
        await conn.execute(_MARK_HANDED_OFF[self._db.dialect == "postgresql"],
                           {"event_ids": event_ids, "b_now": self._clock()})

    async def _mark(self) -> None:
        while self._confirmed:
            await asyncio.sleep(self.MARK_LINGER)
            event_ids, self._confirmed = list(dict.fromkeys(self._confirmed)), []
            try:
                await self._db.write(partial(self._mark_published, event_ids))
            except Exception as exc:          # noqa: BLE001 - published; a relay sends a copy later
                log.warning("marking %d published events failed; a relay publishes them again after the lease: %s",
                            len(event_ids), type(exc).__name__)
