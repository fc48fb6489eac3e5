"""Parked items: listed with their errors and replayed, on the embedded queue (SQLite and
PostgreSQL) and on RabbitMQ's dead-letter queue; and `unsubd parked` as a real command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aio_pika
import aiormq
import pytest

from handlers.model import Decision, Inbound
from worker.pipeline.consumer import Consumer
from worker.store.db import Database
from worker.store.models import InboundItem
from worker.queue.amqp import Broker
from worker.queue.parked import HOLDING_SUFFIX, list_parked, replay
from worker.pipeline.pool import ClassifyTimeout
from worker.queue.embedded import EmbeddedQueue
from tests.conftest import make_settings, port_open, service_missing
from tests.e2e.test_cli import unsubd
from tests.integration import test_amqp_batch
from tests.integration import test_queue_contract as contract
from tests.integration.test_queue_contract import RABBIT_URL, Backend, Embedded, classify, events_for, item, utcnow
from tests.integration.test_smtp import wait_for

backend = contract.backend          # the contract's three backends: embedded on SQLite and PostgreSQL, RabbitMQ
rabbit_backend = test_amqp_batch.rabbit_backend


def with_classifier(b: Backend, fixed: dict[str, bool]) -> None:
    """The contract's stub classifier, except that `fixme` addresses hit the time limit
    until `fixed["now"]` is set (a bug fixed by a new release, say)."""
    async def classify_until_fixed(it: Inbound, now: object) -> Decision:
        if b"fixme" in it.raw.split(b"\n", 1)[0] and not fixed["now"]:
            raise ClassifyTimeout("cpu time limit (1s) exceeded")
        return await classify(it, utcnow())

    queue = b.queue if isinstance(b, Embedded) else None
    b.consumer = Consumer(b.settings, queue, classify_until_fixed, b.db.unit_of_work, utcnow, database=b.db)


async def test_a_parked_item_is_listed_with_its_error_and_applied_once_replayed(backend):
    fixed = {"now": False}
    with_classifier(backend, fixed)
    stuck = item(b"bounce:fixme@kommun-vast.example")
    fine = item(b"bounce:fine@kommun-vast.example")
    await backend.enqueue(stuck)
    await backend.enqueue(fine)
    await backend.start()
    await wait_for(lambda: _parked(backend, 1), timeout=30)
    await wait_for(lambda: _applied(backend, [fine.id]), timeout=30)
    db = None if backend.settings.amqp_url else backend.db

    (listed,) = await list_parked(backend.settings, db, 10)
    assert listed.id == stuck.id and "cpu time limit" in listed.error and listed.bytes == len(stuck.raw)
    assert listed.parked_at is not None
    assert [p.id for p in await list_parked(backend.settings, db, 10)] == [stuck.id]   # listing changes nothing

    assert await replay(backend.settings, db, {"no-such-item"}, utcnow()) == []
    fixed["now"] = True
    assert await replay(backend.settings, db, {stuck.id}, utcnow()) == [stuck.id]
    await wait_for(lambda: _applied(backend, [stuck.id]), timeout=30)
    assert await list_parked(backend.settings, db, 10) == []
    assert await replay(backend.settings, db, None, utcnow()) == []
    await backend.stop()
    assert await events_for(backend.db, [stuck.id, fine.id]) == {stuck.id: 1, fine.id: 1}


async def _parked(b: Backend, n: int) -> bool:
    return b.consumer.counters.parked >= n


async def _applied(b: Backend, ids: list[str]) -> bool:
    return len(await events_for(b.db, ids)) == len(ids)


async def _park_one(db_path: Path) -> str:
    settings = make_settings(f"sqlite+aiosqlite:///{db_path}")
    db = Database.connect(settings.database_url)
    try:
        from worker.app import prepare_database

        await prepare_database(settings, db)
        queue = EmbeddedQueue(db, settings, utcnow)
        it = item(b"bounce:cli@kommun-vast.example")
        await queue.put(it)
        await queue.park(it.id, "classify: ValueError: cannot read this message (after 5 attempts)")
        return it.id
    finally:
        await db.close()


async def _row(db_path: Path, item_id: str) -> tuple[str, int]:
    db = Database.connect(f"sqlite+aiosqlite:///{db_path}")
    try:
        async with db.sessions() as s:
            row = await s.get(InboundItem, item_id)
            assert row is not None
            return row.status, row.attempts
    finally:
        await db.close()


async def test_the_parked_command_lists_and_replays(tmp_path: Path):
    db_path = tmp_path / "parked.db"
    item_id = await _park_one(db_path)

    listed = await asyncio.to_thread(unsubd, "parked", "list", "--json", db=db_path)
    assert listed.returncode == 0, listed.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["id"] == item_id and "cannot read this message" in entry["error"]
    text = await asyncio.to_thread(unsubd, "parked", "list", db=db_path)
    assert item_id in text.stdout and "cannot read this message" in text.stdout

    neither = await asyncio.to_thread(unsubd, "parked", "replay", db=db_path)
    assert neither.returncode == 2 and "--all" in neither.stderr
    both = await asyncio.to_thread(unsubd, "parked", "replay", item_id, "--all", db=db_path)
    assert both.returncode == 2
    unknown = await asyncio.to_thread(unsubd, "parked", "replay", "nope", db=db_path)
    assert unknown.returncode == 1 and "not parked: nope" in unknown.stderr
    assert await _row(db_path, item_id) == ("failed", 0)

    done = await asyncio.to_thread(unsubd, "parked", "replay", item_id, db=db_path)
    assert done.returncode == 0 and f"replayed {item_id}" in done.stdout
    assert await _row(db_path, item_id) == ("pending", 0)
    empty = await asyncio.to_thread(unsubd, "parked", "list", db=db_path)
    assert empty.returncode == 0 and "nothing is parked" in empty.stdout


async def test_a_message_the_broker_dead_lettered_by_itself_is_listed_and_replayed(rabbit_backend):
    """A message that killed its consumer at every delivery reaches RabbitMQ's delivery
    limit and is dead-lettered by the broker, without our error header."""
    b = rabbit_backend
    it = item(b"bounce:killer@kommun-vast.example")
    await b.enqueue(it)
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        for _ in range(10):                       # each consumer "dies" holding it
            ch = await conn.channel()
            q = await ch.get_queue(b.settings.amqp.inbound_queue, ensure=False)
            message = await q.get(no_ack=False, fail=False)
            if message is None:
                break
            await message.nack(requeue=True)
            await ch.close()
    (listed,) = await wait_for(lambda: list_parked(b.settings, None, 10), timeout=30)
    assert listed.id == it.id and "dead-lettered by RabbitMQ: delivery_limit" in listed.error
    assert await replay(b.settings, None, None, utcnow()) == [it.id]
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:                              # back as it arrived, its attempts counted afresh
        q = await (await conn.channel()).get_queue(b.settings.amqp.inbound_queue, ensure=False)
        back = await q.get(no_ack=False)
        assert back.body == it.raw and back.message_id == it.id
        assert not {"x-death", "x-first-death-reason", "x-unsubd-error"} & set(back.headers)
        assert back.headers.get("x-delivery-count", 0) == 0
    await b.start()
    await wait_for(lambda: _applied(b, [it.id]), timeout=30)
    assert b.consumer.counters.applied == 1 and b.consumer.counters.parked == 0


# -- the dead-letter queue on RabbitMQ: looking does not wear a parked message out ----------------------


@contextlib.asynccontextmanager
async def rabbit_names() -> AsyncIterator[Any]:
    """Settings with queue and exchange names of this test's own, deleted afterwards."""
    if not port_open("127.0.0.1", 5672):
        service_missing("RabbitMQ on 127.0.0.1:5672")
    p = f"p{uuid.uuid4().hex[:10]}"
    settings = make_settings(**{"UNSUBD_AMQP_URL": RABBIT_URL, "UNSUBD_AMQP__INBOUND_QUEUE": f"{p}.inbound",
                                "UNSUBD_AMQP__DEAD_LETTER_EXCHANGE": f"{p}.dlx",
                                "UNSUBD_AMQP__DEAD_LETTER_QUEUE": f"{p}.dlq", "UNSUBD_AMQP__UPDATES_EXCHANGE": f"{p}.up"})
    try:
        yield settings
    finally:
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            n = settings.amqp
            for q in (n.inbound_queue, n.inbound_queue + ".bulk", n.dead_letter_queue,
                      n.dead_letter_queue + HOLDING_SUFFIX):
                ch = await conn.channel()
                await ch.queue_delete(q)
            ch = await conn.channel()
            for x in (n.dead_letter_exchange, n.updates_exchange):
                await ch.exchange_delete(x)


async def park_on_rabbit(settings: Any, n: int, start: int = 0) -> list[str]:
    """`n` messages dead-lettered the way the consumer does it: to the exchange, with the error."""
    ids = []
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        dlx = await ch.get_exchange(settings.amqp.dead_letter_exchange, ensure=False)
        for i in range(start, start + n):
            ids.append(f"parked-{i:03d}")
            await dlx.publish(aio_pika.Message(f"message {i}".encode(), message_id=ids[-1],
                                               headers={"x-unsubd-error": f"error {i}",
                                                        "x-unsubd-parked-at": "2026-12-08T00:00:00+00:00"},
                                               delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                              routing_key=settings.amqp.dead_letter_queue, mandatory=True)
    return ids


async def is_classic(name: str) -> bool:
    """The queue `name` accepts being declared as a classic queue (a quorum queue refuses)."""
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        try:
            await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
            return True
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False


@pytest.mark.rabbitmq
async def test_listing_the_parked_messages_many_times_neither_loses_nor_reorders_them():
    """RabbitMQ 4 drops a quorum queue's message after 20 returns; the parked page is
    looked at far more often than that."""
    async with rabbit_names() as settings:
        broker = Broker(settings)
        await broker.connect()                         # declares the dead-letter queue
        await broker.close()
        assert await is_classic(settings.amqp.dead_letter_queue)
        ids = await park_on_rabbit(settings, 5)
        for _ in range(30):
            listed = await list_parked(settings, None, 100)
            assert [p.id for p in listed] == ids
            assert [p.error for p in listed] == [f"error {i}" for i in range(5)]
        # A partial look (the page shows at most `limit`) also hands the rest back in place.
        for _ in range(5):
            assert [p.id for p in await list_parked(settings, None, 2)] == ids[:2]
        assert [p.id for p in await list_parked(settings, None, 100)] == ids
        assert await replay(settings, None, {ids[2]}, utcnow()) == [ids[2]]
        assert [p.id for p in await list_parked(settings, None, 100)] == ids[:2] + ids[3:]


@pytest.mark.rabbitmq
async def test_a_quorum_dead_letter_queue_of_an_earlier_release_is_moved_without_loss():
    async with rabbit_names() as settings:
        n = settings.amqp
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:                               # as an earlier release declared it, under RabbitMQ 4's limit
            ch = await conn.channel()
            dlx = await ch.declare_exchange(n.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            old = await ch.declare_queue(n.dead_letter_queue, durable=True,
                                         arguments={"x-queue-type": "quorum", "x-delivery-limit": 20})
            await old.bind(dlx, routing_key=n.dead_letter_queue)
        ids = await park_on_rabbit(settings, 7)
        # The hazard, on this broker: such a queue loses its messages after 20 looks.
        control = f"{n.dead_letter_queue}.control"
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(control, durable=True, arguments={"x-queue-type": "quorum",
                                                                        "x-delivery-limit": 20})
            await ch.default_exchange.publish(aio_pika.Message(b"x", delivery_mode=2), routing_key=control)
            looks = 0
            while True:
                look = await conn.channel()
                if await (await look.get_queue(control, ensure=False)).get(no_ack=False, fail=False) is None:
                    break
                await look.close()
                looks += 1
                assert looks <= 25
            assert looks == 21
            await (await conn.channel()).queue_delete(control)
        assert not await is_classic(n.dead_letter_queue)

        # Connecting moves them to a classic queue, in order, with their errors.
        broker = Broker(settings)
        await broker.connect()
        await broker.close()
        assert await is_classic(n.dead_letter_queue)
        for _ in range(25):
            listed = await list_parked(settings, None, 100)
            assert [(p.id, p.error) for p in listed] == [(i, f"error {k}") for k, i in enumerate(ids)]
        # New dead letters still arrive, after them; the holding queue is gone; connecting again moves nothing.
        more = await park_on_rabbit(settings, 2, start=7)
        broker = Broker(settings)
        await broker.connect()
        await broker.close()
        assert [p.id for p in await list_parked(settings, None, 100)] == ids + more
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await (await conn.channel()).declare_queue(n.dead_letter_queue + HOLDING_SUFFIX, passive=True)


@pytest.mark.rabbitmq
async def test_a_move_cut_short_is_finished_by_the_next_process():
    """A process that stopped after moving the messages to the holding queue (and
    deleting the old one) leaves them there; the next one to connect brings them back."""
    async with rabbit_names() as settings:
        n = settings.amqp
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            dlx = await ch.declare_exchange(n.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            holding = await ch.declare_queue(n.dead_letter_queue + HOLDING_SUFFIX, durable=True,
                                             arguments={"x-queue-type": "classic"})
            await holding.bind(dlx, routing_key=n.dead_letter_queue)
        ids = await park_on_rabbit(settings, 3)
        broker = Broker(settings)
        await broker.connect()
        await broker.close()
        assert [p.id for p in await list_parked(settings, None, 100)] == ids
        assert await is_classic(n.dead_letter_queue)


@pytest.mark.rabbitmq
async def test_a_heavy_parked_message_is_replayed_to_the_bulk_queue_and_a_light_one_to_the_inbound_queue():
    """Replaying keeps issue 22's lanes: a parked item larger than consumer.heavy_bytes
    goes back to `<inbound>.bulk`, where it can never fill the inbound queue's prefetch."""
    async with rabbit_names() as settings:
        broker = Broker(settings)
        await broker.connect()
        try:
            channel = await broker.channel()
            await broker.declare(channel)
            await broker.declare_bulk(channel)
            await channel.close()
        finally:
            await broker.close()
        heavy = b"x" * (settings.consumer.heavy_bytes + 1)
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            dlx = await ch.get_exchange(settings.amqp.dead_letter_exchange, ensure=False)
            for item_id, body in (("parked-light", b"small"), ("parked-heavy", heavy)):
                await dlx.publish(aio_pika.Message(body, message_id=item_id, headers={"x-unsubd-error": "e"},
                                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                  routing_key=settings.amqp.dead_letter_queue, mandatory=True)
        assert sorted(await replay(settings, None, None, utcnow())) == ["parked-heavy", "parked-light"]
        conn = await aio_pika.connect(RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            found = {}
            for name in (settings.amqp.inbound_queue, settings.amqp.inbound_queue + ".bulk"):
                queue = await ch.get_queue(name, ensure=False)
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    found[message.message_id] = name
        assert found == {"parked-light": settings.amqp.inbound_queue,
                         "parked-heavy": settings.amqp.inbound_queue + ".bulk"}
