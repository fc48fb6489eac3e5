"""Parked items: listed with their errors and replayed, on the embedded queue (SQLite and
PostgreSQL) and on RabbitMQ's dead-letter queue; and `unsubd parked` as a real command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika

from handlers.model import Decision, Inbound
from worker.pipeline.consumer import Consumer
from worker.store.db import Database
from worker.store.models import InboundItem
from worker.queue.parked import list_parked, replay
from worker.pipeline.pool import ClassifyTimeout
from worker.queue.embedded import EmbeddedQueue
from tests.conftest import make_settings
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
