"""The embedded inbound queue: the `inbound_item` table in the same database.

`put` returns only after the item is committed (SQLite: WAL + synchronous=FULL), so an
SMTP 250 given after it means the message survives a crash. Concurrent puts share a
commit (group commit): the items that arrive while one commit is running are written
by the next, in one transaction, and each caller returns once its own row is
committed. Consumers claim items with a lease, and every claim counts as an attempt.
A claim may take at most so many heavy items (over consumer.heavy_bytes): ordinary items
are then claimed past heavy ones that wait (the consumer's lanes, issue 22).
A consumer marks an item done in the transaction that applies its decision (`done_in`).

A claimed item names its claimer (`Claimer`: machine, boot, process, queue). Items
whose claimer is gone (a process on this machine that has died) are taken back by
`recover` at once, at a consumer's start, instead of after their lease; items whose
lease ran out (a claimer elsewhere, or one that hangs) are taken back by it too.
Taking back does not charge the items that were merely in flight beside the culprit
of a crash: their attempt is given back and they are marked `crashed`, and such an
item is claimed only alone (`claim_crashed`, with nothing else in flight). One whose
consumer dies again while it is alone is the cause: that attempt stands, and after
`max_attempts` of them it is parked, so a message that kills its consumer is still
parked like any other failure. An attempt that an outage interrupted is given back
(`release`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from handlers.model import Inbound
from worker.store.db import Database, GroupCommit, WriteConn
from worker.errors import QueueUnavailable
from worker.store.models import InboundItem

log = logging.getLogger("unsubd.queue")

PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"
_T = InboundItem.__table__
_EXISTING = select(_T.c.id).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_DUE = (select(_T.c.id, _T.c.raw, _T.c.mail_from, _T.c.rcpt_tos, _T.c.received_at, _T.c.source, _T.c.attempts,
               _T.c.available_at)
        .where(_T.c.status == PENDING, _T.c.available_at <= bindparam("b_now"),
               _T.c.crashed == bindparam("b_crashed"))
        .order_by(_T.c.available_at, _T.c.received_at)
        .limit(bindparam("b_limit")))
# The lanes (consumer.heavy_bytes): length() of a BLOB (SQLite) or bytea (PostgreSQL) is
# read from the value's header, without reading the value itself.
_SIZE = func.length(_T.c.raw)
_DUE_LIGHT = _DUE.where(_SIZE <= bindparam("b_heavy"))
_DUE_HEAVY = _DUE.where(_SIZE > bindparam("b_heavy"))
_LEASE = (update(_T).where(_T.c.id == bindparam("b_id"))
          .values(status=PROCESSING, attempts=bindparam("b_attempts"), available_at=bindparam("b_until"),
                  claimed_by=bindparam("b_claimer"), updated_at=bindparam("b_now")))
_HELD = select(_T.c.id, _T.c.claimed_by, _T.c.crashed, _T.c.attempts, _T.c.available_at).where(
    _T.c.status == PROCESSING)
# Taken back only from the claimer it was seen with, while still processing: an item
# that claimer settled meanwhile stays as it is.
_TAKE_BACK = (update(_T).where(_T.c.id == bindparam("b_id"), _T.c.status == PROCESSING,
                               _T.c.claimed_by.is_not_distinct_from(bindparam("b_claimer")))
              .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"), crashed=True,
                      claimed_by=None, last_error=bindparam("b_error"), available_at=bindparam("b_now"),
                      updated_at=bindparam("b_now")))


class Claimer:
    """Who holds a lease: `host/boot/pid/start/nonce`, one per queue object.

    `gone` says whether another claimer's process has certainly ended: it ran on this
    machine (same host name) and either the machine has booted since, or no process
    with its pid and start time runs now. A claimer on another machine is never known
    to be gone: its items wait for their lease.
    """

    def __init__(self, text: str | None = None) -> None:
        self.text = text or "/".join((socket.gethostname()[:60], _boot_id(), str(os.getpid()),
                                      _start_ticks(os.getpid()), uuid.uuid4().hex[:12]))

    def gone(self, other: str | None) -> bool:
        if not other or other == self.text:
            return False
        parts = other.split("/")
        mine = self.text.split("/")
        if len(parts) != 5 or parts[0] != mine[0]:
            return False
        host_boot, boot, pid_text, start = mine[1], parts[1], parts[2], parts[3]
        if boot and host_boot and boot != host_boot:
            return True                        # the machine has booted since: every process of then is gone
        try:
            pid = int(pid_text)
        except ValueError:
            return False
        if pid == os.getpid():                 # this process (whichever queue object), or one before it with its pid
            return bool(start) and bool(mine[3]) and start != mine[3]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False                       # exists, someone else's
        now = _start_ticks(pid)
        return bool(start) and bool(now) and now != start  # the pid was reused by a newer process


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:40]
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time since boot (proc(5), /proc/PID/stat field 22), or "" if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()      # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""
_DONE = (update(_T).where(_T.c.id.in_(bindparam("ids", expanding=True)))
         .values(status=DONE, last_error=None, updated_at=bindparam("b_now")))


@dataclass(frozen=True)
class Claimed:
    item: Inbound
    attempts: int          # including this one


class EmbeddedQueue:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime],
                 claimer: Claimer | None = None) -> None:
        self._db = db
        self._settings = settings.consumer
        self._clock = clock
        self.claimer = claimer or Claimer()
        self.arrived = asyncio.Event()        # set by put(): wakes a consumer in this process at once
        self._puts: GroupCommit[Inbound, bool] = GroupCommit(self._store, max_batch=128)
        insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        self._insert_new = insert(_T).on_conflict_do_nothing(index_elements=["id"])
        locked = (lambda q: q.with_for_update(skip_locked=True)) if db.dialect == "postgresql" else (lambda q: q)
        self._due, self._due_light, self._due_heavy = locked(_DUE), locked(_DUE_LIGHT), locked(_DUE_HEAVY)
        self.heavy_bytes = self._settings.heavy_bytes

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
                            "last_error": None, "available_at": now, "updated_at": now, "claimed_by": None,
                            "crashed": False}
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

    async def claim(self, limit: int, heavy_limit: int | None = None) -> list[Claimed]:
        """Lease up to `limit` items that are due, oldest first (items of a crash excepted),
        of which at most `heavy_limit` heavy ones (over consumer.heavy_bytes; None: no
        separate limit). Ordinary items then overtake heavy ones that wait: that is the lane."""
        return await self._claim(limit, crashed=False, heavy_limit=heavy_limit)

    async def claim_crashed(self) -> Claimed | None:
        """Lease one due item that was in flight when its consumer died. The caller handles
        it alone: nothing else in flight until it is settled, so that a crash meanwhile is
        this item's."""
        claimed = await self._claim(1, crashed=True)
        return claimed[0] if claimed else None

    async def _claim(self, limit: int, crashed: bool, heavy_limit: int | None = None) -> list[Claimed]:
        now = self._clock()
        lease_until = now + timedelta(seconds=self._settings.lease)
        claimer = self.claimer.text

        async def due(conn: WriteConn) -> list[Any]:
            params = {"b_now": now, "b_limit": limit, "b_crashed": crashed, "b_heavy": self.heavy_bytes}
            if heavy_limit is None or heavy_limit >= limit:
                return list((await conn.execute(self._due, params)).all())
            rows = list((await conn.execute(self._due_light, params)).all())
            if heavy_limit > 0:
                rows += (await conn.execute(self._due_heavy, {**params, "b_limit": heavy_limit})).all()
                rows.sort(key=lambda r: (r.available_at, r.received_at))
            return rows[:limit]

        async def lease(conn: WriteConn) -> list[Claimed]:
            rows = await due(conn)
            if rows:
                await conn.execute(_LEASE, [{"b_id": r.id, "b_attempts": r.attempts + 1, "b_until": lease_until,
                                             "b_claimer": claimer, "b_now": now} for r in rows])
            return [Claimed(item=Inbound(id=r.id, raw=r.raw, mail_from=r.mail_from, rcpt_tos=tuple(r.rcpt_tos),
                                         received_at=r.received_at, source=r.source), attempts=r.attempts + 1)
                    for r in rows]

        return await self._db.write(lease)

    async def recover(self, holding: set[str] | frozenset[str] = frozenset()) -> tuple[int, int]:
        """Take back the items of claimers that are gone, and those whose lease ran out
        (except the ones this queue's consumer still holds, `holding`). Returns (made due
        again, parked).

        An item not yet marked `crashed` may have shared its claimer's crash with others:
        its attempt is given back, and it is marked. A marked one was claimed alone, so
        its claimer stopped over it: the attempt stands, and with `max_attempts` spent it
        is parked.
        """
        now = self._clock()
        async with self._db.sessions() as session:
            rows = (await session.execute(_HELD)).all()
        mine = self.claimer.text
        victims = [r for r in rows if self.claimer.gone(r.claimed_by)
                   or (r.available_at <= now and not (r.claimed_by == mine and r.id in holding))]
        if not victims:
            return 0, 0
        limit = self._settings.max_attempts
        params = []
        for r in victims:
            if r.crashed and r.attempts >= limit:
                params.append({"b_id": r.id, "b_claimer": r.claimed_by, "b_status": FAILED, "b_attempts": r.attempts,
                               "b_error": f"its consumer stopped while handling it alone, {r.attempts} times "
                                          f"(after {r.attempts} attempts)", "b_now": now})
            else:
                params.append({"b_id": r.id, "b_claimer": r.claimed_by, "b_status": PENDING, "b_error": None,
                               "b_attempts": r.attempts if r.crashed else max(0, r.attempts - 1), "b_now": now})

        async def take_back(conn: WriteConn) -> None:
            await conn.execute(_TAKE_BACK, params)

        await self._db.write(take_back)
        parked = sum(1 for p in params if p["b_status"] == FAILED)
        log.warning("took back %d item(s) of stopped consumers (%d parked)", len(params), parked)
        if parked < len(params):
            self.arrived.set()
        return len(params) - parked, parked

    async def crashed_due(self) -> bool:
        """Whether some item of a crash is due (to be claimed alone, `claim_crashed`)."""
        now = self._clock()
        async with self._db.sessions() as session:
            return await session.scalar(select(InboundItem.id).where(
                InboundItem.status == PENDING, InboundItem.available_at <= now,
                InboundItem.crashed.is_(True)).limit(1)) is not None

    async def release(self, item_id: str, attempts: int) -> None:
        """Give the item back, due now, its attempt not counted: an outage interrupted it."""
        await self._set(item_id, status=PENDING, attempts=max(0, attempts - 1), claimed_by=None,
                        available_at=self._clock())

    async def done(self, item_id: str) -> None:
        await self._set(item_id, status=DONE, last_error=None)

    async def done_in(self, item_ids: list[str], conn: WriteConn) -> None:
        """Mark items done inside the caller's transaction (the one that applied their decisions)."""
        await conn.execute(_DONE, {"ids": item_ids, "b_now": self._clock()})

    async def retry(self, item_id: str, error: str, attempts: int) -> float:
        """Make the item due again after an exponential backoff with jitter; returns the delay."""
        base = min(self._settings.retry_max, self._settings.retry_base * 2 ** (attempts - 1))
        delay = base * random.uniform(0.5, 1.0)
        # Handled alone without a crash, an item of one goes back among the others.
        await self._set(item_id, status=PENDING, last_error=error[:2000], crashed=False,
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
