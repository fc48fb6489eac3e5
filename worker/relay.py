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
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from config import Settings
from worker.db import OUTBOX_CHANNEL, Database
from worker.models import Outbox

_T = Outbox.__table__
_MARK_PUBLISHED = (update(_T).where(_T.c.id.in_(bindparam("ids", expanding=True)))
                   .values(published_at=bindparam("b_now")))

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
        self._claim = (select(_T.c.id, _T.c.routing_key, _T.c.payload).where(_T.c.published_at.is_(None))
                       .order_by(_T.c.id).limit(self._settings.batch).with_for_update(skip_locked=True))

    async def drain_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        if self._db.dialect != "postgresql" and not await self.backlog(limit=1):
            # SQLite: a read first, so an idle relay never takes the write lock. On
            # PostgreSQL the claim (SKIP LOCKED) blocks nobody, and the check would cost
            # a round trip per batch.
            return 0
        async with self._db.transaction() as session:
            conn = await session.connection()
            rows = (await conn.execute(self._claim)).all()
            if not rows:
                return 0
            await self.publisher.publish(
                [OutboundUpdate(id=r.id, routing_key=r.routing_key, payload=dict(r.payload)) for r in rows])
            await conn.execute(_MARK_PUBLISHED, {"ids": [r.id for r in rows], "b_now": self._clock()})
        self.published += len(rows)
        self._feed_changed.set()              # wake GET /v1/updates?wait= in this process
        self._feed_changed = asyncio.Event()
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
