"""Database.write, the transaction a consumer applies decisions in, on both backends.

On PostgreSQL it runs on the asyncpg connection itself, with statements compiled once by
SQLAlchemy (worker.store.connection._Driven), not through SQLAlchemy's execution. These tests hold it
to what SQLAlchemy's own path gives: the same values read back (types processed the same
way), the same kind of errors, and a connection that is fit for the next transaction
after a failure or a cancellation.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from handlers.state.apply import apply_all
from handlers.model import Action, ActionType, Decision, Inbound, Kind
from worker.store.models import Event, Outbox, Suppression
from worker.queue.embedded import EmbeddedQueue
from worker.store.db import Database
from tests.conftest import make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def bounce(item_id: str, address: str) -> Decision:
    act = Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown", hard=True,
                 diagnostic="550 5.1.1 no such user\x00")
    return Decision(item_id=item_id, kind=Kind.BOUNCE, actions=(act,), reason="dsn: 1 failed (5.1.1)",
                    evidence={"recipients": [{"final_recipient": address, "status": "5.1.1"}], "n": 3})


async def write_decisions(db, decisions, now=T0):
    return await db.write(lambda conn: apply_all(decisions, db.unit_of_work(joined=conn), now))


READ_BACK = (select(Event.item_id, Event.occurred_at, Event.evidence, Event.actions, Event.verified,
                    Outbox.payload, Outbox.sequence, Outbox.published_at)
             .join(Outbox, Outbox.event_id == Event.id).order_by(Event.item_id))


async def test_rows_read_in_a_write_are_what_a_session_reads(database):
    applied = await write_decisions(database, [bounce("i1", "a@kommun-vast.example"),
                                               bounce("i2", "b@kommun-vast.example")])
    assert [a.updates for a in applied] == [1, 1]
    in_write = await database.write(lambda conn: _all(conn, READ_BACK))
    async with database.sessions() as s:
        in_session = (await s.execute(READ_BACK)).all()
    assert [tuple(r) for r in in_write] == [tuple(r) for r in in_session]
    first = in_write[0]
    assert first.item_id == "i1" and first.occurred_at == T0 and first.occurred_at.tzinfo is not None
    assert first.evidence == {"recipients": [{"final_recipient": "a@kommun-vast.example", "status": "5.1.1"}],
                              "n": 3}
    # PostgreSQL cannot store U+0000: it arrives as U+FFFD there, unchanged on SQLite.
    assert first.actions[0]["diagnostic"].startswith("550 5.1.1 no such user")
    assert first.verified is False and first.payload["address"] == "a@kommun-vast.example"
    assert first.sequence == 1 and first.published_at is None


async def _all(conn, statement, params=None):
    return (await conn.execute(statement, params)).all()


async def test_a_batch_sees_its_own_writes_and_dedupes_by_item(database):
    same = "c@kommun-vast.example"
    applied = await write_decisions(database, [bounce("i1", same), bounce("i1", same), bounce("i2", same)])
    assert [a.duplicate for a in applied] == [False, True, False]
    assert [a.updates for a in applied] == [1, 0, 0]     # the second bounce finds the address suppressed
    again = await write_decisions(database, [bounce("i2", same), bounce("i3", "d@kommun-vast.example")],
                                  T0 + timedelta(minutes=1))
    assert [a.duplicate for a in again] == [True, False]
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 3
        assert await s.scalar(select(func.count()).select_from(Suppression)) == 2


async def test_a_failed_statement_rolls_back_the_whole_write_and_the_next_one_works(database):
    await write_decisions(database, [bounce("i1", "a@kommun-vast.example")])
    event_id = await database.write(lambda conn: _scalar(conn, select(Event.id)))

    async def clash(conn):
        await apply_all([bounce("i9", "z@kommun-vast.example")], database.unit_of_work(joined=conn), T0)
        row = {"id": event_id, "item_id": "other", "kind": "bounce", "source": "smtp", "reason": "x",
               "review": False, "verified": False, "actions": [], "evidence": {}, "occurred_at": T0}
        await conn.execute(insert(Event.__table__), row)      # the same primary key again

    with pytest.raises(DBAPIError) as failed:
        await database.write(clash)
    assert "z@kommun-vast.example" not in str(failed.value)  # no parameters (addresses) in the error
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 1    # i9 rolled back with it
    # Every pooled connection is still fit for work.
    await asyncio.gather(*(write_decisions(database, [bounce(f"n{i}", f"n{i}@kommun-vast.example")])
                           for i in range(12)))
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 13


async def test_an_error_of_the_work_itself_comes_out_as_it_is_and_rolls_back(database):
    """A relay publishes inside its write: a broker's ConnectionError (an OSError, as
    the driver's socket errors are) must not come out worded as the database's."""
    async def publish_fails(conn):
        await apply_all([bounce("i1", "a@kommun-vast.example")], database.unit_of_work(joined=conn), T0)
        raise ConnectionError("broker away")

    with pytest.raises(ConnectionError, match="broker away"):
        await database.write(publish_fails)
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 0
    await write_decisions(database, [bounce("i2", "b@kommun-vast.example")])
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 1


async def _scalar(conn, statement):
    return (await conn.execute(statement)).scalar()


@pytest.fixture
async def pg_database(pg_url):
    db = Database.connect(pg_url)
    try:
        yield db
    finally:
        await db.close()


async def test_a_write_cancelled_mid_statement_leaves_no_connection_in_a_transaction(pg_database):
    """PostgreSQL: the statement is on the wire when the task is cancelled. (SQLite's
    writes run whole in one thread and never suspend, so there is no such moment.)"""
    db = pg_database

    async def slow(conn):
        await apply_all([bounce("gone", "gone@kommun-vast.example")], db.unit_of_work(joined=conn), T0)
        await conn.execute(select(func.pg_sleep(10)))

    task = asyncio.create_task(db.write(slow))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The pool's connections (10, and overflow) all work, and the cancelled write left nothing.
    await asyncio.wait_for(asyncio.gather(*(write_decisions(db, [bounce(f"n{i}", f"n{i}@kommun-vast.example")])
                                            for i in range(15))), 30)
    async with db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event).where(Event.item_id == "gone")) == 0
        assert await s.scalar(select(func.count()).select_from(Event)) == 15


async def test_the_embedded_queue_stores_and_leases_through_write(database):
    """The embedded queue's writes (executemany, JSON and binary columns) go the same way."""
    queue = EmbeddedQueue(database, make_settings(), lambda: T0)
    items = [Inbound.from_smtp(b"Subject: x\r\n\r\nbody \x00\xff\r\n", "", [f"r{i}@mail.example.org"], T0)
             for i in range(3)]
    assert [await queue.put(i) for i in items] == [True, True, True]
    assert await queue.put(items[0]) is False
    claimed = await queue.claim(10)
    assert sorted(c.item.id for c in claimed) == sorted(i.id for i in items)
    by_id = {c.item.id: c for c in claimed}
    for item in items:
        got = by_id[item.id]
        assert got.item.raw == item.raw and got.item.rcpt_tos == item.rcpt_tos and got.attempts == 1
        assert got.item.received_at == T0
    assert await queue.claim(10) == []                    # leased
