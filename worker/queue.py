"""The embedded inbound queue: the `inbound_item` table in the same database.

`put` returns only after the item is committed (SQLite: WAL + synchronous=FULL), so an
SMTP 250 given after it means the message survives a crash. Consumers claim items
with a lease; an item whose lease runs out (its consumer died) is claimed again, and
every claim counts as an attempt, so a message that kills its consumer is parked
after `max_attempts` like any other failure.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from config import Settings
from handlers.model import Inbound
from worker.db import Database
from worker.errors import QueueUnavailable
from worker.models import InboundItem

log = logging.getLogger("unsubd.queue")

PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"


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

    async def put(self, item: Inbound) -> bool:
        """Store `item` durably. Returns False if an identical item was stored before.

        Raises QueueUnavailable when the item could not be committed.
        """
        now = self._clock()
        try:
            async with self._db.transaction() as session:
                if await session.get(InboundItem, item.id) is not None:
                    return False
                session.add(InboundItem(
                    id=item.id, raw=item.raw, mail_from=item.mail_from, rcpt_tos=list(item.rcpt_tos),
                    source=item.source, received_at=item.received_at, status=PENDING, attempts=0,
                    available_at=now, updated_at=now))
        except IntegrityError:
            return False          # the same item, committed by a concurrent session
        except (SQLAlchemyError, OSError) as exc:
            raise QueueUnavailable(f"embedded queue: {type(exc).__name__}") from exc
        self.arrived.set()
        return True

    async def claim(self, limit: int) -> list[Claimed]:
        """Lease up to `limit` items that are due, oldest first."""
        now = self._clock()
        lease_until = now + timedelta(seconds=self._settings.lease)
        async with self._db.transaction() as session:
            rows = (await session.scalars(
                select(InboundItem)
                .where(InboundItem.status.in_((PENDING, PROCESSING)), InboundItem.available_at <= now)
                .order_by(InboundItem.available_at, InboundItem.received_at)
                .limit(limit)
                .with_for_update(skip_locked=True))).all()
            claimed = []
            for row in rows:
                row.status, row.attempts, row.available_at, row.updated_at = (
                    PROCESSING, row.attempts + 1, lease_until, now)
                claimed.append(Claimed(item=Inbound(
                    id=row.id, raw=row.raw, mail_from=row.mail_from, rcpt_tos=tuple(row.rcpt_tos),
                    received_at=row.received_at, source=row.source), attempts=row.attempts))
        return claimed

    async def done(self, item_id: str) -> None:
        await self._set(item_id, status=DONE, last_error=None)

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
