"""Listener batches on the inbound queue: items accepted together travel as one message.

The format is pure code (round trips, malformed batches, property-based mutations);
the rest runs against the real RabbitMQ and PostgreSQL on loopback, with the real
AmqpEnqueue and AmqpConsumer and the contract tests' stub classifier.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import aio_pika
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from handlers.state.apply import apply
from handlers.model import Inbound
from worker.store import migrate
from worker.queue.amqp import BATCH_TYPE, H_ATTEMPTS, H_ERROR, AmqpConsumer, from_batch, to_batch, to_message
from worker.store.db import Database
from tests.conftest import PG_HOST, PG_PORT, _drop_pg_database, make_settings, port_open, service_missing
from tests.integration.test_queue_contract import (CONTRACT_ENV, RABBIT_URL, Rabbit, _pg_database, classify, events_for,
                                       item, utcnow)
from tests.integration.test_smtp import wait_for


def an_item(raw: bytes, mail_from: str | None = "", rcpts: tuple[str, ...] = ("bounces@mail.example.org",),
            source: str = "smtp") -> Inbound:
    at = datetime(2026, 11, 23, 6, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    return Inbound(id=uuid.uuid4().hex, raw=raw, mail_from=mail_from, rcpt_tos=rcpts, received_at=at, source=source)


# -- the format ---------------------------------------------------------------------

def test_a_batch_gives_back_every_item_byte_for_byte():
    items = [
        an_item(b"Subject: x\r\n\r\nbody\r\n"),
        an_item(b"", mail_from=None, rcpts=()),                              # empty raw, no envelope
        an_item(b"\x00\xff\xfe\r\rCR only\n\n{\"v\":1}\n", mail_from="ops@x.example"),
        an_item("Från: Åsa\n".encode("latin-1"), rcpts=("bounces+é@mail.example.org", "reply@mail.example.org")),
        an_item(b"a" * 70000, source="queue"),
    ]
    message = to_batch(items)
    assert message.content_type == BATCH_TYPE and message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert from_batch(message.body) == items


@given(st.lists(st.tuples(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=20)),
                          st.lists(st.text(max_size=20), max_size=3)), min_size=1, max_size=8))
@hsettings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_any_items_round_trip(parts):
    items = [an_item(raw, mail_from=m, rcpts=tuple(r)) for raw, m, r in parts]
    assert from_batch(to_batch(items).body) == items


def _index(items: list[dict], v: int = 1) -> bytes:
    return json.dumps({"v": v, "items": items}).encode() + b"\n"


GOOD = {"id": "a1", "mail_from": "", "rcpt_tos": ["b@x.example"], "received_at": "2026-11-23T06:00:00+00:00",
        "source": "smtp", "bytes": 3}


@pytest.mark.parametrize("body, says", [
    (b"", "without its index"),
    (b"raw mail with no newline at all", "without its index"),
    (b"From: someone\nSubject: not a batch\n\nbody", "not JSON"),
    (_index([GOOD], v=2) + b"abc", "version"),
    (b'["v", 1]\nabc', "version"),
    (_index([]) , "0 of its 0 bytes"),
    (_index([GOOD]) + b"abcdef", "3 of its 6 bytes"),                   # bytes nobody accounts for
    (_index([{**GOOD, "bytes": 4}]) + b"abc", "item 0"),                # longer than the body
    (_index([{**GOOD, "bytes": -1}]) + b"abc", "item 0"),
    (_index([{**GOOD, "bytes": "3"}]) + b"abc", "item 0"),
    (_index([GOOD, {**GOOD, "id": ""}]) + b"abcabc", "item 1"),
    (_index([{k: v for k, v in GOOD.items() if k != "rcpt_tos"}]) + b"abc", "item 0"),
    (_index([{**GOOD, "rcpt_tos": "b@x.example"}]) + b"abc", "item 0"),
    (_index([{**GOOD, "mail_from": 7}]) + b"abc", "item 0"),
    (_index([{**GOOD, "received_at": "yesterday"}]) + b"abc", "item 0"),
    (_index(["a1"]) + b"abc", "item 0"),
])
def test_a_malformed_batch_is_refused_with_what_is_wrong(body, says):
    with pytest.raises(ValueError, match=says):
        from_batch(body)


@given(st.data())
@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_mutated_batch_is_read_or_refused_never_anything_else(data):
    body = bytearray(to_batch([an_item(b"first\r\n"), an_item(b"second", mail_from=None)]).body)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del body[at:at + data.draw(st.integers(1, 40))]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=10))
    try:
        items = from_batch(bytes(body))
    except ValueError:
        return
    assert sum(len(i.raw) for i in items) <= len(body)


# -- on the real broker ---------------------------------------------------------------

@pytest.fixture
async def rabbit_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rabbit]:
    if not port_open("127.0.0.1", 5672):
        service_missing("RabbitMQ on 127.0.0.1:5672")
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    pg_name = await _pg_database()
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{pg_name}"
    p = f"b{uuid.uuid4().hex[:10]}"
    extra = getattr(request, "param", {})
    settings = make_settings(url, **CONTRACT_ENV, **extra, UNSUBD_AMQP_URL=RABBIT_URL,
                             UNSUBD_AMQP__INBOUND_QUEUE=f"{p}.inbound", UNSUBD_AMQP__DEAD_LETTER_EXCHANGE=f"{p}.dlx",
                             UNSUBD_AMQP__DEAD_LETTER_QUEUE=f"{p}.dlq", UNSUBD_AMQP__UPDATES_EXCHANGE=f"{p}.updates")
    db = Database.connect(url)
    await migrate.upgrade(db.engine)
    await db.close()
    backend = Rabbit(settings)
    try:
        await backend.open()
        yield backend
    finally:
        await backend.stop()
        await backend.close()
        await _drop_pg_database(pg_name)


async def queue_depth(backend: Rabbit) -> int:
    return await backend.left_in_queue()


async def test_items_accepted_together_travel_as_one_message_and_each_is_applied(rabbit_backend: Rabbit):
    items = [item(f"bounce:together{i}@kommun-vast.example".encode()) for i in range(40)]
    assert await asyncio.gather(*(rabbit_backend._enqueue(i) for i in items)) == [True] * 40
    publishes, carried = rabbit_backend._enqueue.messages, rabbit_backend._enqueue.items
    assert carried == 40 and publishes < 40
    assert await queue_depth(rabbit_backend) == publishes
    await rabbit_backend.start()
    ids = [i.id for i in items]
    await wait_for(lambda: _applied(rabbit_backend, ids), timeout=30)
    await wait_for(lambda: _depth(rabbit_backend, 0), timeout=30)
    await rabbit_backend.stop()
    assert await events_for(rabbit_backend.db, ids) == {i: 1 for i in ids}
    assert rabbit_backend.consumer.counters.applied == 40
    assert await rabbit_backend.parked() == {}


async def _applied(backend: Rabbit, ids: list[str]) -> bool:
    return len(await events_for(backend.db, ids)) == len(ids)


async def _depth(backend: Rabbit, n: int) -> bool:
    return await queue_depth(backend) == n


@pytest.mark.parametrize("rabbit_backend", [{"UNSUBD_AMQP__INBOUND_BATCH": "1"}], indirect=True)
async def test_with_batches_off_every_item_is_a_message_of_its_own(rabbit_backend: Rabbit):
    items = [item(f"bounce:alone{i}@kommun-vast.example".encode()) for i in range(20)]
    assert await asyncio.gather(*(rabbit_backend._enqueue(i) for i in items)) == [True] * 20
    assert await queue_depth(rabbit_backend) == 20
    assert (rabbit_backend._enqueue.messages, rabbit_backend._enqueue.items) == (20, 20)
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(rabbit_backend.settings.amqp.inbound_queue, ensure=False)
        first = await q.get(no_ack=False)
        assert first.content_type == "message/rfc822" and first.message_id in {i.id for i in items}
        await ch.close()


@pytest.mark.parametrize("rabbit_backend", [{"UNSUBD_AMQP__INBOUND_BATCH_BYTES": "5000"}], indirect=True)
async def test_a_batch_stays_within_its_byte_limit(rabbit_backend: Rabbit):
    items = [item(f"bounce:big{i}@kommun-vast.example\n".encode() + b"x" * 2000) for i in range(10)]
    big = item(b"bounce:huge@kommun-vast.example\n" + b"y" * 9000)        # over the limit: goes alone
    assert all(await asyncio.gather(*(rabbit_backend._enqueue(i) for i in [*items, big])))
    # Submitted together, they are published together: two by two, and the big one alone.
    assert (rabbit_backend._enqueue.messages, rabbit_backend._enqueue.items) == (6, 11)
    assert await queue_depth(rabbit_backend) == 5 + 1
    await rabbit_backend.start()
    ids = [i.id for i in [*items, big]]
    await wait_for(lambda: _applied(rabbit_backend, ids), timeout=30)


@pytest.mark.parametrize("rabbit_backend", [{"UNSUBD_CONSUMER__HEAVY_BYTES": "1024"}], indirect=True)
async def test_heavy_items_go_alone_to_the_bulk_queue_and_light_ones_batch_on_the_inbound_one(
        rabbit_backend: Rabbit):
    """Issue 22, lanes: the queue is chosen at accept time by size. Heavy items (over
    consumer.heavy_bytes) are each a message of their own on `<inbound>.bulk`, whose
    arguments match the inbound queue's (quorum, delivery limit, dead-lettering); light
    ones batch as before. The consumer takes both and applies each item once."""
    light = [item(f"bounce:light{i}@kommun-vast.example".encode()) for i in range(10)]
    heavy = [item(f"bounce:heavy{i}@kommun-vast.example\n".encode() + b"z" * 2000) for i in range(3)]
    assert all(await asyncio.gather(*(rabbit_backend._enqueue(i) for i in [*light, *heavy])))
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        bulk = await ch.declare_queue(rabbit_backend.broker.bulk_queue, passive=True)
        inbound = await ch.declare_queue(rabbit_backend.settings.amqp.inbound_queue, passive=True)
        assert bulk.declaration_result.message_count == 3
        assert 1 <= inbound.declaration_result.message_count < 10         # the light ones, batched
        first = await bulk.get(no_ack=False)
        assert first.content_type == "message/rfc822" and first.message_id in {i.id for i in heavy}
        await ch.close()                                                   # unacknowledged: it goes back
    await rabbit_backend.start()
    ids = [i.id for i in [*light, *heavy]]
    await wait_for(lambda: _applied(rabbit_backend, ids), timeout=30)
    await wait_for(lambda: _depth(rabbit_backend, 0), timeout=30)
    await rabbit_backend.stop()
    assert await events_for(rabbit_backend.db, ids) == {i: 1 for i in ids}
    assert await rabbit_backend.parked() == {}


async def test_poison_in_a_batch_is_parked_alone_and_the_rest_applied(rabbit_backend: Rabbit):
    poison, hang = item(b"poison"), item(b"hang")
    good = [item(f"bounce:beside{i}@kommun-vast.example".encode()) for i in range(4)]
    together = [good[0], poison, good[1], hang, good[2], good[3]]
    assert all(await asyncio.gather(*(rabbit_backend._enqueue(i) for i in together)))
    assert rabbit_backend._enqueue.messages < len(together)
    await rabbit_backend.start()
    await wait_for(lambda: _applied(rabbit_backend, [g.id for g in good]), timeout=30)
    await wait_for(lambda: _parked(rabbit_backend, 2), timeout=60)
    await rabbit_backend.stop()
    parked = await _dlq(rabbit_backend)
    assert set(parked) == {poison.id, hang.id}          # each alone, under its own item id
    poison_msg, hang_msg = parked[poison.id], parked[hang.id]
    assert poison_msg.body == poison.raw and hang_msg.body == hang.raw
    assert poison_msg.content_type == "message/rfc822"
    # A parse failure is retried: once inside the batch, then alone, max_attempts (3) in all.
    assert "after 3 attempts" in str(poison_msg.headers[H_ERROR]) and poison_msg.headers[H_ATTEMPTS] == 3
    assert rabbit_backend.consumer.counters.retried == 2       # not 3: its try inside the batch counts
    assert "cpu time limit" in str(hang_msg.headers[H_ERROR]) and hang_msg.headers[H_ATTEMPTS] == 1
    assert await events_for(rabbit_backend.db, [poison.id, hang.id]) == {}
    assert await queue_depth(rabbit_backend) == 0


async def _parked(backend: Rabbit, n: int) -> bool:
    return backend.consumer.counters.parked >= n


async def _dlq(backend: Rabbit) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    out = {}
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(backend.settings.amqp.dead_letter_queue, ensure=False)
        while (msg := await q.get(no_ack=False, fail=False)) is not None:
            out[str(msg.message_id)] = msg
        await ch.close()
    return out


async def test_a_batch_delivered_before_is_taken_apart_and_nothing_is_applied_twice(rabbit_backend: Rabbit):
    items = [item(f"bounce:again{i}@kommun-vast.example".encode()) for i in range(3)]
    n = rabbit_backend.settings.amqp
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.default_exchange.publish(to_batch(items), routing_key=n.inbound_queue)
        q = await ch.get_queue(n.inbound_queue, ensure=False)
        taken = await q.get(no_ack=False)                     # a consumer that dies holding it
        assert taken.content_type == BATCH_TYPE
    # It applied the first item before it died.
    await apply(await classify(items[0], utcnow()), rabbit_backend.db.unit_of_work(), utcnow())
    amqp = AmqpConsumer(rabbit_backend.broker, rabbit_backend.consumer, rabbit_backend.settings, utcnow)
    stopping = asyncio.Event()
    task = asyncio.create_task(amqp.run(stopping))
    try:
        await wait_for(lambda: _applied(rabbit_backend, [i.id for i in items]), timeout=30)
        await wait_for(lambda: _settled(rabbit_backend, 3), timeout=30)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
    assert amqp.batches_split == 1
    c = rabbit_backend.consumer.counters
    assert (c.applied, c.duplicates) == (2, 1)
    assert await events_for(rabbit_backend.db, [i.id for i in items]) == {i.id: 1 for i in items}
    assert await queue_depth(rabbit_backend) == 0 and await rabbit_backend.parked() == {}


async def _settled(backend: Rabbit, n: int) -> bool:
    c = backend.consumer.counters
    return c.applied + c.duplicates + c.parked >= n


async def test_a_malformed_batch_is_parked_whole_with_its_reason(rabbit_backend: Rabbit):
    n = rabbit_backend.settings.amqp
    body = _index([GOOD]) + b"abcdef"
    after = item(b"bounce:after-bad-batch@kommun-vast.example")
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.default_exchange.publish(aio_pika.Message(body, content_type=BATCH_TYPE, message_id="bad-batch"),
                                          routing_key=n.inbound_queue)
    await rabbit_backend.enqueue(after)
    await rabbit_backend.start()
    await wait_for(lambda: _applied(rabbit_backend, [after.id]), timeout=30)
    await wait_for(lambda: _parked_by_broker(rabbit_backend, 1), timeout=30)
    parked = await _dlq(rabbit_backend)
    assert set(parked) == {"bad-batch"} and parked["bad-batch"].body == body
    assert "3 of its 6 bytes" in str(parked["bad-batch"].headers[H_ERROR])


async def _parked_by_broker(backend: Rabbit, n: int) -> bool:
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(backend.settings.amqp.dead_letter_queue, passive=True)
        return (q.declaration_result.message_count or 0) >= n


async def test_a_nonsense_attempts_header_is_read_as_none(rabbit_backend: Rabbit):
    n = rabbit_backend.settings.amqp
    it = item(b"bounce:odd-header@kommun-vast.example")
    message = to_message(it)
    message.headers["x-unsubd-earlier-attempts"] = "lots"
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.default_exchange.publish(message, routing_key=n.inbound_queue)
    await rabbit_backend.start()
    await wait_for(lambda: _applied(rabbit_backend, [it.id]), timeout=30)
    await wait_for(lambda: _depth(rabbit_backend, 0), timeout=30)
    assert rabbit_backend.consumer.counters.applied == 1
