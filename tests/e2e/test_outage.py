"""Outages are not poison (issue 22, item 1).

An outage of the database (or the broker) is not a failure of the items that meet it:
none of them may be parked for it or lose an attempt to it, in production (RabbitMQ +
PostgreSQL, the database cut through a TCP proxy) or embedded (SQLite whose writes
fail). And a consumer that dies holding items gives them back at once to the next one
that starts on the machine, not after the lease, without charging them for the crash,
while an item that kills its consumer on its own is still parked after max_attempts.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import aio_pika
import asyncpg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from handlers.model import Action, ActionType, Decision, Inbound, Kind
from worker.store import migrate
from worker.queue.amqp import AmqpConsumer, AmqpEnqueue, Broker
from worker.app import Worker
from worker.pipeline.consumer import Consumer
from worker.store.db import Database
from worker.errors import DatabaseUnavailable, QueueUnavailable, is_conflict, is_outage
from worker.store.models import Event, InboundItem
from worker.queue.embedded import Claimer, EmbeddedQueue
from tests.conftest import PG_HOST, PG_PORT, make_settings
from tests.support.messages import dsn
from tests.support.outage_support import BrokenDisk, TcpProxy, descendants, signal_all
from tests.integration.test_amqp import RABBIT_URL, names, rabbit  # noqa: F401 - fixtures
from tests.e2e.test_pipeline import BOUNCES, Serve, db_counts, serves  # noqa: F401 - fixture
from tests.integration.test_smtp import send, wait_for

FAST = {"UNSUBD_CONSUMER__MAX_ATTEMPTS": "3", "UNSUBD_CONSUMER__RETRY_BASE": "0.05",
        "UNSUBD_CONSUMER__RETRY_MAX": "0.2", "UNSUBD_CONSUMER__POLL_INTERVAL": "0.05",
        "UNSUBD_CONSUMER__OUTAGE_BACKOFF_BASE": "0.1", "UNSUBD_CONSUMER__OUTAGE_BACKOFF_MAX": "0.4"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def item(address: str) -> Inbound:
    return Inbound.from_smtp(f"bounce:{address}\n{uuid.uuid4().hex}".encode(), "", [BOUNCES], utcnow())


async def classify(it: Inbound, now: datetime) -> Decision:
    """Stub classifier: `bounce:ADDRESS` suppresses ADDRESS."""
    address = it.raw.split(b"\n", 1)[0].removeprefix(b"bounce:").decode()
    act = Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown", hard=True)
    return Decision(item_id=it.id, kind=Kind.BOUNCE, actions=(act,), reason="dsn 5.1.1")


def poison_budget(settings) -> float:
    """Seconds in which today's retry schedule spends every attempt of an item (the
    longest backoffs, no jitter): an outage longer than this parked items before."""
    c = settings.consumer
    return sum(min(c.retry_max, c.retry_base * 2 ** (k - 1)) for k in range(1, c.max_attempts))


async def events_per_item(db: Database, ids: list[str]) -> dict[str, int]:
    async with db.sessions() as s:
        rows = (await s.execute(select(Event.item_id, func.count()).where(Event.item_id.in_(ids))
                                .group_by(Event.item_id))).all()
    return dict(rows)


# --- which failures are outages -------------------------------------------------------

def _sa(orig: BaseException, kind=OperationalError) -> BaseException:
    return kind("INSERT ...", None, orig)


@pytest.mark.parametrize("exc, outage", [
    (_sa(sqlite3.OperationalError("database is locked")), True),
    (_sa(sqlite3.OperationalError("disk I/O error")), True),
    (_sa(sqlite3.OperationalError("attempt to write a readonly database")), True),
    (_sa(sqlite3.OperationalError("no such table: event")), False),
    (_sa(sqlite3.IntegrityError("UNIQUE constraint failed: event.item_id"), IntegrityError), False),
    (_sa(asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")), True),
    (_sa(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")), True),
    (_sa(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")), True),
    (_sa(asyncpg.exceptions.SerializationError("could not serialize access")), True),
    (_sa(asyncpg.exceptions.DeadlockDetectedError("deadlock detected")), True),
    (_sa(asyncpg.exceptions.UniqueViolationError("duplicate key value"), IntegrityError), False),
    (_sa(asyncpg.exceptions.StringDataRightTruncationError("value too long")), False),
    (_sa(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")), True),
    (_sa(asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress")), False),
    (ConnectionRefusedError(111, "Connect call failed"), True),
    (asyncio.TimeoutError(), True),
    (DatabaseUnavailable("gone"), True),
    (QueueUnavailable("broker: ConnectionClosed"), True),
    (ValueError("cannot read this message"), False),
    (KeyError("address"), False),
], ids=lambda v: type(getattr(v, "orig", v)).__name__ if isinstance(v, BaseException) else str(v))
def test_outages_are_told_apart_from_the_items_own_failures(exc, outage):
    assert is_outage(exc) is outage


def test_conflicts_between_transactions_are_told_apart_from_the_service_being_away():
    assert is_conflict(_sa(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), DBAPIError))
    assert is_conflict(_sa(asyncpg.exceptions.SerializationError("could not serialize access"), DBAPIError))
    assert is_conflict(_sa(sqlite3.OperationalError("database is locked")))
    assert not is_conflict(_sa(sqlite3.OperationalError("disk I/O error")))
    assert not is_conflict(_sa(asyncpg.exceptions.TooManyConnectionsError("too many clients")))
    assert not is_conflict(ConnectionRefusedError(111, "Connect call failed"))


def test_an_items_error_raised_while_an_outage_was_handled_is_still_the_items():
    try:
        try:
            raise _sa(sqlite3.OperationalError("database is locked"))
        except OperationalError:
            raise ValueError("bad header")           # implicit __context__, not a wrap
    except ValueError as exc:
        assert not is_outage(exc)


# --- production: RabbitMQ + PostgreSQL, the database cut under the consumer -----------

async def _dlq_depth(settings) -> int:
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(settings.amqp.dead_letter_queue, passive=True)
        return q.declaration_result.message_count or 0


async def test_production_a_database_outage_parks_nothing_and_applies_everything_once(names, pg_url):
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    url = pg_url.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
    settings = make_settings(url, **FAST, **names)
    outage = 10 * poison_budget(settings) + 2.0         # far longer than the old code needed to park them
    db, check = Database.connect(url), Database.connect(pg_url)
    broker = Broker(settings)
    tasks: list[asyncio.Task[None]] = []
    stops: list[asyncio.Event] = []

    def start_consumer() -> tuple[Consumer, AmqpConsumer]:
        consumer = Consumer(settings, None, classify, db.unit_of_work, utcnow, database=db)
        amqp = AmqpConsumer(broker, consumer, settings, utcnow)
        stops.append(asyncio.Event())
        tasks.append(asyncio.create_task(amqp.run(stops[-1])))
        return consumer, amqp

    try:
        await broker.connect()
        enqueue = AmqpEnqueue(broker, settings)
        await enqueue.start()
        c1, a1 = start_consumer()
        before = [item(f"before{i}@kommun-vast.example") for i in range(10)]
        for it in before:
            await enqueue(it)
        await wait_for(lambda: _applied(check, before), timeout=30)

        # 1. An outage the consumer lives through: mail keeps arriving (some of it as batches).
        await proxy.cut()
        during = [item(f"during{i}@kommun-vast.example") for i in range(20)]
        for it in during[:5]:
            await enqueue(it)
        await asyncio.gather(*(enqueue(it) for it in during[5:]))
        await wait_for(lambda: _true(c1.counters.outage_pauses >= 1), timeout=30)
        await asyncio.sleep(outage)                     # the outage itself, not a wait for a result
        assert c1.counters.retried == c1.counters.parked == 0
        assert await _dlq_depth(settings) == 0
        await proxy.restore()
        await wait_for(lambda: _applied(check, before + during), timeout=60)

        # 2. An outage during which the consumer is stopped: what it holds goes back, uncounted,
        #    and another consumer applies it once the database answers.
        pauses = c1.counters.outage_pauses
        await proxy.cut()
        stopped = [item(f"stopped{i}@kommun-vast.example") for i in range(8)]
        await asyncio.gather(*(enqueue(it) for it in stopped))
        await wait_for(lambda: _true(c1.counters.outage_pauses > pauses), timeout=30)
        stops[0].set()
        await asyncio.wait_for(tasks[0], 30)
        assert c1.counters.released >= 1 and a1.released == c1.counters.released
        await proxy.restore()
        third, _ = start_consumer()
        everything = before + during + stopped
        await wait_for(lambda: _applied(check, everything), timeout=60)
        await wait_for(lambda: _true(third.counters.applied + third.counters.duplicates >= len(stopped)),
                       timeout=30)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await broker.close()
        await db.close()
        await proxy.close()
    counts = await events_per_item(check, [it.id for it in everything])
    await check.close()
    assert counts == {it.id: 1 for it in everything}    # all applied, none twice
    assert c1.counters.parked == third.counters.parked == 0
    assert c1.counters.retried == third.counters.retried == 0
    assert await _dlq_depth(settings) == 0


async def _applied(db: Database, items: list[Inbound]) -> bool:
    return len(await events_per_item(db, [it.id for it in items])) == len(items)


async def _true(value: bool) -> bool:
    return value


# --- embedded: SQLite whose writes fail -----------------------------------------------

async def _migrated(url: str) -> None:
    db = Database.connect(url)
    try:
        await migrate.upgrade(db.engine)
    finally:
        await db.close()


async def test_embedded_a_failing_disk_parks_nothing_and_costs_no_attempt(sqlite_url):
    settings = make_settings(sqlite_url, **FAST)
    await _migrated(sqlite_url)
    db = Database.connect(sqlite_url)
    disk = BrokenDisk(db.engine.sync_engine, db._sync_engine)   # the writers; reads still work
    queue = EmbeddedQueue(db, settings, utcnow)
    entered, go = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def held_classify(it: Inbound, now: datetime) -> Decision:
        seen.append(it.id)
        if len(seen) >= 8:
            entered.set()
        await go.wait()
        return await classify(it, now)

    consumer = Consumer(settings, queue, held_classify, db.unit_of_work, utcnow, database=db)
    items = [item(f"disk{i}@kommun-vast.example") for i in range(30)]
    for it in items:
        await queue.put(it)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        await asyncio.wait_for(entered.wait(), 30)        # items in flight, claimed (one attempt each)
        disk.broken = True
        go.set()                                          # their decisions now meet the broken disk
        await wait_for(lambda: _true(consumer.counters.outage_pauses >= 1), timeout=30)
        await asyncio.sleep(10 * poison_budget(settings) + 2.0)   # the outage itself
        assert consumer.counters.retried == consumer.counters.parked == 0
        assert disk.failures >= 2                          # the consumer kept probing
        assert (await queue.counts()).get("failed", 0) == 0
        disk.broken = False
        await wait_for(lambda: _applied(db, items), timeout=60)
        await wait_for(lambda: _statuses_are(db, {"done"}), timeout=30)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
        disk.remove()
    try:
        async with db.sessions() as s:
            attempts = dict((await s.execute(select(InboundItem.id, InboundItem.attempts))).all())
        assert await events_per_item(db, [it.id for it in items]) == {it.id: 1 for it in items}
        assert attempts == {it.id: 1 for it in items}     # claimed once each: the outage cost nothing
        assert consumer.counters.retried == consumer.counters.parked == 0
    finally:
        await db.close()


async def _statuses_are(db: Database, wanted: set[str]) -> bool:
    async with db.sessions() as s:
        return set((await s.scalars(select(InboundItem.status).distinct())).all()) == wanted


async def test_outage_pauses_are_counted_in_the_metrics(sqlite_url):
    settings = make_settings(sqlite_url, **FAST)
    w = Worker(settings)
    await w.start()
    disk = BrokenDisk(w.db.engine.sync_engine, w.db._sync_engine)
    try:
        assert (await w.metrics())["consumer_outage_pauses_total"] == 0
        disk.broken = True                                # the idle consumer's next claim fails
        await wait_for(lambda: _metric_at_least(w, "consumer_outage_pauses_total", 1), timeout=30)
        disk.broken = False
        assert await asyncio.to_thread(send, w.smtp_address[1], dsn("after.disk@kommun-vast.example"),
                                       [BOUNCES]) == {}
        await wait_for(lambda: _metric_at_least(w, "consumer_applied_total", 1), timeout=30)
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{w.http_address[1]}/metrics")
        pauses = [line for line in text.splitlines() if line.startswith("unsubd_consumer_outage_pauses_total ")]
        assert len(pauses) == 1 and float(pauses[0].split()[1]) >= 1
        assert (await w.metrics())["consumer_parked_total"] == 0
    finally:
        disk.remove()
        await w.stop()


async def _metric_at_least(w: Worker, name: str, n: int) -> bool:
    return (await w.metrics()).get(name, 0) >= n


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


# --- embedded: a consumer that dies holding items ---------------------------------------

def dead_claimer() -> Claimer:
    """The claimer of a process on this machine that has ended (it ran and exited)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    mine = Claimer().text.split("/")
    return Claimer("/".join((mine[0], mine[1], proc.stdout.strip(), "1", "dead")))


async def test_items_of_a_dead_consumer_come_back_at_start_one_at_a_time_and_uncharged(sqlite_url):
    settings = make_settings(sqlite_url, **{**FAST, "UNSUBD_CONSUMER__LEASE": "120"})
    await _migrated(sqlite_url)
    db = Database.connect(sqlite_url)
    try:
        items = [item(f"crash{i}@kommun-vast.example") for i in range(6)]
        dead = EmbeddedQueue(db, settings, utcnow, claimer=dead_claimer())
        for it in items:
            await dead.put(it)
        assert len(await dead.claim(10)) == 6              # ... and then that process died
        queue = EmbeddedQueue(db, settings, utcnow)
        running, most = 0, 0

        async def watched(it: Inbound, now: datetime) -> Decision:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.02)
            running -= 1
            return await classify(it, now)

        consumer = Consumer(settings, queue, watched, db.unit_of_work, utcnow, database=db)
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            # Bounded far under the 120 s lease: they must not wait for it.
            await wait_for(lambda: _statuses_are(db, {"done"}), timeout=20)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 30)
        async with db.sessions() as s:
            attempts = dict((await s.execute(select(InboundItem.id, InboundItem.attempts))).all())
        assert attempts == {it.id: 1 for it in items}      # the crash was not theirs: not charged
        assert most == 1                                   # taken back, they were handled alone
        assert consumer.counters.recovered == 6 and consumer.counters.parked == 0
    finally:
        await db.close()


async def test_an_item_that_kills_its_consumer_alone_is_still_parked_after_max_attempts(sqlite_url):
    settings = make_settings(sqlite_url, **{**FAST, "UNSUBD_CONSUMER__LEASE": "120"})
    await _migrated(sqlite_url)
    db = Database.connect(sqlite_url)
    try:
        queue = EmbeddedQueue(db, settings, utcnow)
        poison = item("poison@kommun-vast.example")
        others = [item(f"beside{i}@kommun-vast.example") for i in range(3)]
        for it in [poison, *others]:
            await queue.put(it)
        dead = dead_claimer()
        await EmbeddedQueue(db, settings, utcnow, claimer=dead).claim(10)   # a crash with all four in flight
        crashes = 0
        while crashes < 10:
            await queue.recover()
            claimed = await queue.claim_crashed()          # one of the crash's items, alone
            if claimed is None:
                break
            if claimed.item.id != poison.id:
                await queue.done(claimed.item.id)
                continue
            crashes += 1                                   # it kills its consumer again, alone this time
            async with db.transaction() as s:
                await s.execute(update(InboundItem).where(InboundItem.id == poison.id)
                                .values(claimed_by=dead.text))
        async with db.sessions() as s:
            rows = {r.id: r for r in (await s.execute(select(InboundItem))).scalars()}
        assert crashes == settings.consumer.max_attempts
        assert rows[poison.id].status == "failed" and rows[poison.id].attempts == settings.consumer.max_attempts
        assert "stopped while handling it alone" in rows[poison.id].last_error
        assert all(rows[o.id].status == "done" and rows[o.id].attempts == 1 for o in others)
    finally:
        await db.close()


async def test_a_killed_serve_gives_its_claimed_items_to_the_next_at_once(tmp_path, serves):
    """`unsubd serve` SIGKILLed while it holds claimed items (its parser processes frozen,
    so they stay claimed); the next `serve`, with the default lease, finishes them well
    before that lease would have let anyone take them."""
    lease = make_settings().consumer.lease                  # the default, 120 s
    db_path = tmp_path / "u.db"
    env = {"UNSUBD_CONSUMER__LEASE": str(lease), "UNSUBD_PARSE__WORKERS": "1",
           "UNSUBD_PARSE__WALL_SECONDS": "600", "UNSUBD_PARSE__CPU_SECONDS": "600"}
    first = Serve(db_path, **env).start()
    serves.append(first)
    frozen = descendants(first.proc.pid)
    assert frozen, "the serve process has no parser processes to freeze"
    signal_all(frozen, signal.SIGSTOP)
    try:
        recipients = [f"killed{i}@kommun-vast.example" for i in range(12)]
        for rcpt in recipients:
            assert await asyncio.to_thread(send, first.smtp_port, dsn(rcpt), [BOUNCES]) == {}
        await wait_for(lambda: _processing(db_path, len(recipients)), timeout=30)
        first.kill()
    finally:
        signal_all(frozen, signal.SIGKILL)
    second = Serve(db_path, **{k: v for k, v in env.items() if not k.startswith("UNSUBD_PARSE")}).start()
    serves.append(second)
    await wait_for(lambda: _all_done(db_path, len(recipients)), timeout=lease / 6)
    assert second.terminate() == 0
    counts = await db_counts(db_path)
    assert counts["statuses"] == {"done": len(recipients)}
    assert counts["bounce_events"] == counts["event_items"] == len(recipients)


async def _processing(db_path: Path, n: int) -> bool:
    return (await db_counts(db_path))["statuses"].get("processing", 0) == n


async def _all_done(db_path: Path, n: int) -> bool:
    return (await db_counts(db_path))["statuses"].get("done", 0) == n


# --- production: deliveries lost with the channel are not counted ----------------------

def test_a_delivery_lost_with_our_channel_is_not_counted_when_it_comes_back():
    settings = make_settings()
    amqp = AmqpConsumer(SimpleNamespace(), SimpleNamespace(), settings, utcnow)

    def delivery(count: int, earlier: int = 0) -> SimpleNamespace:
        headers = {"x-delivery-count": count} | ({"x-unsubd-earlier-attempts": earlier} if earlier else {})
        return SimpleNamespace(message_id="m1", headers=headers)

    assert amqp._attempts(delivery(0)) == 1
    amqp._forgive(delivery(0))                               # settling it failed: the channel was gone
    assert amqp._attempts(delivery(1)) == 1                  # its redelivery is the same attempt
    assert amqp._attempts(delivery(2)) == 3                  # a nack (the item's failure) still counts
    assert amqp._attempts(delivery(1, earlier=2)) == 4
