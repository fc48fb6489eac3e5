"""One contract for the inbound queue, run against the embedded queue and RabbitMQ.

Each backend is driven through the same small harness: enqueue durably, consume with
the real Consumer (a stub classifier, a real database), redeliver what was taken and
not acknowledged, and park poison with its reason. The embedded queue runs on SQLite
and on PostgreSQL; RabbitMQ (a quorum queue, per-test names) runs with PostgreSQL, as
in production.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aio_pika
import pytest
from sqlalchemy import func, select

from config import Settings
from handlers.state.apply import apply
from handlers.model import Action, ActionType, Decision, Inbound, Kind
from worker.store import migrate
from worker.queue.amqp import H_ERROR, AmqpConsumer, AmqpEnqueue, Broker
from worker.pipeline.consumer import Consumer
from worker.store.db import Database
from worker.store.models import Event, InboundItem, Outbox
from worker.pipeline.pool import ClassifyFailed, ClassifyTimeout
from worker.queue.embedded import EmbeddedQueue
from tests.conftest import PG_HOST, PG_PORT, _create_pg_database, _drop_pg_database, make_settings, port_open, \
    service_missing
from tests.integration.test_smtp import wait_for

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONTRACT_ENV = {"UNSUBD_CONSUMER__MAX_ATTEMPTS": "3", "UNSUBD_CONSUMER__RETRY_BASE": "0.05",
                "UNSUBD_CONSUMER__RETRY_MAX": "0.2", "UNSUBD_CONSUMER__LEASE": "1",
                "UNSUBD_CONSUMER__POLL_INTERVAL": "0.1"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def item(raw: bytes) -> Inbound:
    return Inbound.from_smtp(raw + b"\n" + uuid.uuid4().hex.encode(), "", ["bounces@mail.example.org"], utcnow())


class Held:
    """Items `hold:ADDRESS` wait in classify until `release` is set; `holding` counts
    those waiting now (reset per test by the lanes test)."""

    release = asyncio.Event()
    holding = 0
    most = 0


async def classify(it: Inbound, now: datetime) -> Decision:
    """Stub classifier: `bounce:ADDRESS` suppresses ADDRESS; `poison` fails; `hang` hits the
    time limit; `hold:ADDRESS` suppresses ADDRESS once Held.release is set."""
    head = it.raw.split(b"\n", 1)[0]
    if head == b"poison":
        raise ClassifyFailed("ValueError: cannot read this message")
    if head == b"hang":
        raise ClassifyTimeout("cpu time limit (1s) exceeded")
    if head.startswith(b"hold:"):
        Held.holding += 1
        Held.most = max(Held.most, Held.holding)
        try:
            await Held.release.wait()
        finally:
            Held.holding -= 1
        head = head.replace(b"hold:", b"bounce:", 1)
    address = head.removeprefix(b"bounce:").decode()
    act = Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown", hard=True)
    return Decision(item_id=it.id, kind=Kind.BOUNCE, actions=(act,), reason="dsn 5.1.1")


class Backend:
    """What the contract needs from a queue backend."""

    settings: Settings
    db: Database
    consumer: Consumer

    async def enqueue(self, it: Inbound) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def take_and_drop(self) -> str:
        """Take one item as a consumer would, then die without acknowledging it; its id."""
    async def parked(self) -> dict[str, str]:
        """Parked (dead-lettered) items by id, with their error."""
    async def left_in_queue(self) -> int:
        """Items neither acknowledged nor parked, once consumers have stopped."""


class Embedded(Backend):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.connect(settings.database_url)
        self.queue = EmbeddedQueue(self.db, settings, utcnow)
        self.consumer = Consumer(settings, self.queue, classify, self.db.unit_of_work, utcnow, database=self.db)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def enqueue(self, it: Inbound) -> None:
        await self.queue.put(it)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.consumer.run(self._stopping))

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def take_and_drop(self) -> str:
        (claimed,) = await self.queue.claim(1)          # a consumer that dies now: its lease runs out
        return claimed.item.id

    async def parked(self) -> dict[str, str]:
        async with self.db.sessions() as s:
            rows = (await s.execute(select(InboundItem.id, InboundItem.last_error)
                                    .where(InboundItem.status == "failed"))).all()
        return {i: e for i, e in rows}

    async def left_in_queue(self) -> int:
        counts = await self.queue.counts()
        return counts.get("pending", 0) + counts.get("processing", 0)

    async def close(self) -> None:
        await self.db.close()


class Rabbit(Backend):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.connect(settings.database_url)
        self.broker = Broker(settings)
        self.consumer = Consumer(settings, None, classify, self.db.unit_of_work, utcnow, database=self.db)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.broker.connect()
        self._enqueue = AmqpEnqueue(self.broker, self.settings)
        await self._enqueue.start()

    async def enqueue(self, it: Inbound) -> None:
        await self._enqueue(it)

    async def start(self) -> None:
        amqp = AmqpConsumer(self.broker, self.consumer, self.settings, utcnow)
        self._task = asyncio.create_task(amqp.run(self._stopping))

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def take_and_drop(self) -> str:
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.get_queue(self.settings.amqp.inbound_queue, ensure=False)
            msg = await q.get(no_ack=False)
            return str(msg.message_id)                  # closing the channel unacked: RabbitMQ requeues it

    async def parked(self) -> dict[str, str]:
        out: dict[str, str] = {}
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.get_queue(self.settings.amqp.dead_letter_queue, ensure=False)
            while (msg := await q.get(no_ack=False, fail=False)) is not None:
                out[str(msg.message_id)] = str((msg.headers or {}).get(H_ERROR))
            await ch.close()                            # unacknowledged: they stay parked
        return out

    async def left_in_queue(self) -> int:
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            n = 0
            for name in (self.settings.amqp.inbound_queue, self.broker.bulk_queue):
                q = await ch.declare_queue(name, passive=True)
                n += q.declaration_result.message_count or 0
            return n

    async def close(self) -> None:
        await self.broker.close()
        await self.db.close()
        try:
            conn = await aio_pika.connect(RABBIT_URL)
            async with conn:
                ch = await conn.channel()
                n = self.settings.amqp
                for q in (n.inbound_queue, f"{n.inbound_queue}.bulk", n.dead_letter_queue):
                    await ch.queue_delete(q)
                for x in (n.dead_letter_exchange, n.updates_exchange):
                    await ch.exchange_delete(x)
        except Exception:               # noqa: BLE001 - best effort: names are unique per test
            pass


async def _pg_database() -> str:
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    return await _create_pg_database()


KINDS = ["embedded-sqlite", "embedded-postgres", "rabbitmq-postgres"]


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend(request.param, tmp_path, {}):
        yield b


# Lanes (issue 22): 4 slots (prefetch 4 on RabbitMQ), of which heavy items (over 1 KiB) may hold 2.
LANES_ENV = {"UNSUBD_CONSUMER__CONCURRENCY": "4", "UNSUBD_AMQP__PREFETCH": "4",
             "UNSUBD_CONSUMER__HEAVY_CONCURRENCY": "2", "UNSUBD_CONSUMER__HEAVY_BYTES": "1024"}


@pytest.fixture(params=KINDS)
async def lanes_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend(request.param, tmp_path, LANES_ENV):
        yield b


async def _backend(kind: str, tmp_path: Path, extra: dict[str, str]) -> AsyncIterator[Backend]:
    pg_name = None
    if kind == "embedded-sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
    else:
        pg_name = await _pg_database()
        url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{pg_name}"
    env = {**CONTRACT_ENV, **extra}
    if kind == "rabbitmq-postgres":
        if not port_open("127.0.0.1", 5672):
            service_missing("RabbitMQ on 127.0.0.1:5672")
        p = f"c{uuid.uuid4().hex[:10]}"
        env.update({"UNSUBD_AMQP_URL": RABBIT_URL, "UNSUBD_AMQP__INBOUND_QUEUE": f"{p}.inbound",
                    "UNSUBD_AMQP__DEAD_LETTER_EXCHANGE": f"{p}.dlx", "UNSUBD_AMQP__DEAD_LETTER_QUEUE": f"{p}.dlq",
                    "UNSUBD_AMQP__UPDATES_EXCHANGE": f"{p}.updates"})
    settings = make_settings(url, **env)
    db = Database.connect(url)
    await migrate.upgrade(db.engine)
    await db.close()
    b: Any = Rabbit(settings) if kind.startswith("rabbitmq") else Embedded(settings)
    try:
        if isinstance(b, Rabbit):
            await b.open()
        yield b
    finally:
        await b.stop()
        await b.close()
        if pg_name:
            await _drop_pg_database(pg_name)


async def events_for(db: Database, item_ids: list[str]) -> dict[str, int]:
    async with db.sessions() as s:
        rows = (await s.execute(select(Event.item_id, func.count()).where(Event.item_id.in_(item_ids))
                                .group_by(Event.item_id))).all()
    return {i: n for i, n in rows}


async def outbox_rows(db: Database) -> int:
    async with db.sessions() as s:
        return await s.scalar(select(func.count()).select_from(Outbox)) or 0


async def test_enqueued_items_are_consumed_applied_once_and_acknowledged(backend: Backend):
    items = [item(f"bounce:u{i}@kommun-vast.example".encode()) for i in range(12)]
    for it in items:
        await backend.enqueue(it)
    await backend.start()
    ids = [it.id for it in items]
    await wait_for(lambda: _all_applied(backend, ids), timeout=30)
    await backend.stop()
    assert await events_for(backend.db, ids) == {i: 1 for i in ids}
    assert await outbox_rows(backend.db) == 12
    assert backend.consumer.counters.applied == 12 and backend.consumer.counters.duplicates == 0
    assert await backend.left_in_queue() == 0
    assert await backend.parked() == {}


async def _all_applied(backend: Backend, ids: list[str]) -> bool:
    return len(await events_for(backend.db, ids)) == len(ids)


async def test_the_same_item_enqueued_twice_changes_nothing_twice(backend: Backend):
    it = item(b"bounce:twice@kommun-vast.example")
    other = item(b"bounce:other@kommun-vast.example")
    await backend.enqueue(it)
    await backend.enqueue(it)                     # an MTA that resent after losing our 250
    await backend.enqueue(other)
    await backend.start()
    await wait_for(lambda: _all_applied(backend, [it.id, other.id]), timeout=30)
    await wait_for(lambda: _left(backend, 0), timeout=30)
    await backend.stop()
    assert await events_for(backend.db, [it.id, other.id]) == {it.id: 1, other.id: 1}
    assert await outbox_rows(backend.db) == 2
    assert await backend.left_in_queue() == 0


async def _left(backend: Backend, n: int) -> bool:
    if isinstance(backend, Rabbit):
        # Unacknowledged deliveries are not counted while the consumer holds them; the
        # counters say whether every delivery was settled.
        c = backend.consumer.counters
        return c.applied + c.duplicates + c.parked >= 3 and await backend.left_in_queue() == n
    return await backend.left_in_queue() == n


async def test_taken_but_unacknowledged_items_come_back_and_change_nothing_twice(backend: Backend):
    lost = item(b"bounce:lost@kommun-vast.example")          # taken, then the consumer died: nothing committed
    committed = item(b"bounce:committed@kommun-vast.example")  # committed, then died before the ack
    await backend.enqueue(lost)
    taken = await backend.take_and_drop()
    assert taken == lost.id
    await backend.enqueue(committed)
    decision = await classify(committed, utcnow())
    await apply(decision, backend.db.unit_of_work(), utcnow())
    await backend.start()
    await wait_for(lambda: _all_applied(backend, [lost.id]), timeout=30)
    await wait_for(lambda: _settled(backend, 2), timeout=30)
    await backend.stop()
    assert await events_for(backend.db, [lost.id, committed.id]) == {lost.id: 1, committed.id: 1}
    assert backend.consumer.counters.duplicates == 1 and backend.consumer.counters.applied == 1
    assert await outbox_rows(backend.db) == 2
    assert await backend.left_in_queue() == 0


async def _settled(backend: Backend, n: int) -> bool:
    c = backend.consumer.counters
    return c.applied + c.duplicates + c.parked >= n


async def test_poison_is_parked_with_its_reason_and_later_items_flow(backend: Backend):
    poison = item(b"poison")
    hang = item(b"hang")
    good = [item(f"bounce:after{i}@kommun-vast.example".encode()) for i in range(3)]
    for it in [poison, hang, *good]:
        await backend.enqueue(it)
    await backend.start()
    await wait_for(lambda: _all_applied(backend, [g.id for g in good]), timeout=30)
    await wait_for(lambda: _parked_count(backend, 2), timeout=60)
    await backend.stop()
    parked = await backend.parked()
    assert set(parked) == {poison.id, hang.id}
    # A parse failure is retried up to max_attempts; a time limit is not retried at all.
    assert "cannot read this message" in parked[poison.id] and "after 3 attempts" in parked[poison.id]
    assert "cpu time limit" in parked[hang.id] and "attempts" not in parked[hang.id]
    assert backend.consumer.counters.parked == 2 and backend.consumer.counters.retried == 2
    assert await events_for(backend.db, [poison.id, hang.id]) == {}
    assert await backend.left_in_queue() == 0


async def _parked_count(backend: Backend, n: int) -> bool:
    return backend.consumer.counters.parked >= n


async def test_ordinary_items_overtake_heavy_ones_that_would_fill_every_slot(lanes_backend: Backend):
    """Issue 22: six heavy items (over consumer.heavy_bytes) wait first, more than the four
    slots; each is held in classify. Before the lanes every slot was a heavy item's and the
    ordinary bounce behind them waited for as long as they did (here: for ever). Now heavy
    items hold at most heavy_concurrency (2) slots, the ordinary one is applied while they
    are still held, and afterwards every item is applied exactly once."""
    backend = lanes_backend
    Held.release, Held.holding, Held.most = asyncio.Event(), 0, 0
    pad = b"\n" + b"x" * 2048                                  # over heavy_bytes (1024)
    heavy = [Inbound.from_smtp(f"hold:heavy{i}@kommun-vast.example".encode() + pad + uuid.uuid4().hex.encode(),
                               "", ["bounces@mail.example.org"], utcnow()) for i in range(6)]
    for it in heavy:
        await backend.enqueue(it)
    await backend.start()
    await wait_for(lambda: _holding(2), timeout=30)
    ordinary = item(b"bounce:ordinary@kommun-vast.example")
    await backend.enqueue(ordinary)
    try:
        await wait_for(lambda: _all_applied(backend, [ordinary.id]), timeout=30)
        assert Held.holding == 2 and Held.most == 2              # the heavy ones still held, two at a time
    finally:
        Held.release.set()
    ids = [it.id for it in heavy] + [ordinary.id]
    await wait_for(lambda: _all_applied(backend, ids), timeout=60)
    await backend.stop()
    assert await events_for(backend.db, ids) == {i: 1 for i in ids}
    assert await outbox_rows(backend.db) == 7
    assert Held.most == 2
    assert await backend.left_in_queue() == 0 and await backend.parked() == {}


async def _holding(n: int) -> bool:
    return Held.holding >= n
