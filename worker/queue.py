"""The embedded inbound queue: the `inbound_item` table in the same database.

`put` returns only after the item is committed (SQLite: WAL + synchronous=FULL), so an
SMTP 250 given after it means the message survives a crash. Concurrent puts share a
commit (group commit): the items that arrive while one commit is running are written
by the next, in one transaction, and each caller returns once its own row is
committed. Consumers claim items with a lease; an item whose lease runs out (its
consumer died) is claimed again, and every claim counts as an attempt, so a message
that kills its consumer is parked after `max_attempts` like any other failure. A
consumer marks an item done in the transaction that applies its decision (`done_in`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from handlers.model import Inbound
from worker.db import Database, GroupCommit, WriteConn
from worker.errors import QueueUnavailable
from worker.models import InboundItem

log = logging.getLogger("unsubd.queue")

PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"
_T = InboundItem.__table__
_EXISTING = select(_T.c.id).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_DUE = (select(_T.c.id, _T.c.raw, _T.c.mail_from, _T.c.rcpt_tos, _T.c.received_at, _T.c.source, _T.c.attempts)
        .where(_T.c.status.in_((PENDING, PROCESSING)), _T.c.available_at <= bindparam("b_now"))
        .order_by(_T.c.available_at, _T.c.received_at)
        .limit(bindparam("b_limit")))
_LEASE = (update(_T).where(_T.c.id == bindparam("b_id"))
          .values(status=PROCESSING, attempts=bindparam("b_attempts"), available_at=bindparam("b_until"),
                  updated_at=bindparam("b_now")))
_DONE = (update(_T).where(_T.c.id.in_(bindparam("ids", expanding=True)))
         .values(status=DONE, last_error=None, updated_at=bindparam("b_now")))


@dataclass(frozen=True)
class Claimed:
    item: Inbound
    attempts: int          # including this one


class EmbeddedQueue:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._settings = settings.consumer
        self._clock = clock
        self.arrived = asyncio.Event()        # set by put(): wakes a consumer in this process at once
        self._puts: GroupCommit[Inbound, bool] = GroupCommit(self._store, max_batch=128)
        insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        self._insert_new = insert(_T).on_conflict_do_nothing(index_elements=["id"])
        self._due = _DUE.with_for_update(skip_locked=True) if db.dialect == "postgresql" else _DUE

    async def put(self, item: Inbound) -> bool:
        """Store `item` durably. Returns False if an identical item was stored before.

        Raises QueueUnavailable when the item could not be committed.
        """
        return await self._puts.submit(item)

    async def _store(self, items: list[Inbound]) -> list[bool | BaseException]:
        """Commit a batch of puts in one transaction; True for each item stored now."""
        now = self._clock()
        stored: dict[str, bool] = {}

        async def store(conn: WriteConn) -> dict[str, Any]:
            existing = set((await conn.execute(_EXISTING, {"ids": list({i.id for i in items})})).scalars())
            fresh = {i.id: {"id": i.id, "raw": i.raw, "mail_from": i.mail_from, "rcpt_tos": list(i.rcpt_tos),
                            "source": i.source, "received_at": i.received_at, "status": PENDING, "attempts": 0,
                            "last_error": None, "available_at": now, "updated_at": now}
                     for i in items if i.id not in existing}
            if fresh:
                # Another process may store the same item at the same moment: that one wins.
                await conn.execute(self._insert_new, list(fresh.values()))
            return fresh

        try:
            fresh = await self._db.write(store)
        except (SQLAlchemyError, OSError) as exc:
            raise QueueUnavailable(f"embedded queue: {type(exc).__name__}") from exc
        if fresh:
            self.arrived.set()
        out: list[bool | BaseException] = []
        for i in items:
            out.append(i.id in fresh and not stored.get(i.id, False))
            stored[i.id] = True
        return out

    async def claim(self, limit: int) -> list[Claimed]:
        """Lease up to `limit` items that are due, oldest first."""
        now = self._clock()
        lease_until = now + timedelta(seconds=self._settings.lease)

        async def lease(conn: WriteConn) -> list[Claimed]:
            rows = (await conn.execute(self._due, {"b_now": now, "b_limit": limit})).all()
            if rows:
                await conn.execute(_LEASE, [{"b_id": r.id, "b_attempts": r.attempts + 1, "b_until": lease_until,
                                             "b_now": now} for r in rows])
            return [Claimed(item=Inbound(id=r.id, raw=r.raw, mail_from=r.mail_from, rcpt_tos=tuple(r.rcpt_tos),
                                         received_at=r.received_at, source=r.source), attempts=r.attempts + 1)
                    for r in rows]

        return await self._db.write(lease)

    async def done(self, item_id: str) -> None:
        await self._set(item_id, status=DONE, last_error=None)

    async def done_in(self, item_ids: list[str], conn: WriteConn) -> None:
        """Mark items done inside the caller's transaction (the one that applied their decisions)."""
        await conn.execute(_DONE, {"ids": item_ids, "b_now": self._clock()})

    async def retry(self, item_id: str, error: str, attempts: int) -> float:
        """Make the item due again after an exponential backoff with jitter; returns the delay."""
        base = min(self._settings.retry_max, self._settings.retry_base * 2 ** (attempts - 1))
        delay = base * random.uniform(0.5, 1.0)
        await self._set(item_id, status=PENDING, last_error=error[:2000],
                        available_at=self._clock() + timedelta(seconds=delay))
        return delay

    async def park(self, item_id: str, error: str) -> None:
        """Give up on the item: it stays in the table as `failed`, with its error, for a person."""
        await self._set(item_id, status=FAILED, last_error=error[:2000])

    async def parked(self, limit: int) -> list[tuple[str, str, datetime, int, int]]:
        """Up to `limit` parked items, oldest first: (id, error, parked at, attempts, bytes)."""
        async with self._db.sessions() as session:
            rows = (await session.execute(
                select(InboundItem.id, InboundItem.last_error, InboundItem.updated_at, InboundItem.attempts,
                       func.length(InboundItem.raw))
                .where(InboundItem.status == FAILED).order_by(InboundItem.updated_at, InboundItem.id)
                .limit(limit))).all()
        return [(i, e or "", at, n, size or 0) for i, e, at, n, size in rows]

    async def unpark(self, item_ids: set[str] | None) -> list[str]:
        """Make the parked items named (every one, with None) due again, attempts counted
        afresh; returns the ids made due."""
        where = [InboundItem.status == FAILED]
        if item_ids is not None:
            where.append(InboundItem.id.in_(sorted(item_ids)))
        now = self._clock()
        async with self._db.transaction() as session:
            found = list((await session.scalars(select(InboundItem.id).where(*where).order_by(InboundItem.id))).all())
            if found:
                await session.execute(update(InboundItem).where(InboundItem.id.in_(found)).values(
                    status=PENDING, attempts=0, available_at=now, updated_at=now))
        return found

    async def counts(self) -> dict[str, int]:
        async with self._db.sessions() as session:
            rows = (await session.execute(
                select(InboundItem.status, func.count()).group_by(InboundItem.status))).all()
        return {status: n for status, n in rows}

    async def due(self) -> int:
        now = self._clock()
        async with self._db.sessions() as session:
            return await session.scalar(select(func.count()).select_from(InboundItem).where(
                or_(InboundItem.status == PENDING, InboundItem.status == PROCESSING),
                InboundItem.available_at <= now)) or 0

    async def _set(self, item_id: str, **values: object) -> None:
        async with self._db.transaction() as session:
            await session.execute(update(InboundItem).where(InboundItem.id == item_id)
                                  .values(updated_at=self._clock(), **values))
