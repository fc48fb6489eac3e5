"""Parked items: list them, and put them back on the inbound queue (`unsubd parked`).

An item is parked when it could not be handled: a parse failure after `max_attempts`,
a time limit, a JSON item of an unknown type. It is kept as it arrived, with its
error, for a person to look at. Once the cause is fixed (a new release, a corrected
upstream item), replaying puts it back on the inbound queue; its attempts count
afresh, and since an item is applied once per item key, replaying one that was
applied meanwhile changes nothing.

Embedded mode keeps them as `failed` rows of the inbound table; production mode as
messages in the dead-letter queue, with `x-unsubd-error` and `x-unsubd-parked-at`.
AMQP 0-9-1 has no way to look without taking: listing takes the messages and hands
them back unacknowledged, which a quorum queue counts as a delivery. The dead-letter
queue sets no delivery limit, so on RabbitMQ 3.x that costs nothing; RabbitMQ 4 gives
quorum queues without one a default limit (20), after which it drops the message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from config import Settings
from worker.store.db import Database
from worker.errors import QueueUnavailable
from worker.queue.embedded import EmbeddedQueue


@dataclass(frozen=True)
class ParkedItem:
    id: str
    error: str
    parked_at: str | None
    attempts: int | None
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def list_parked(settings: Settings, db: Database | None, limit: int) -> list[ParkedItem]:
    """Up to `limit` parked items, oldest first. Changes nothing."""
    if settings.amqp_url:
        return await _dlq_list(settings, limit)
    assert db is not None
    rows = await EmbeddedQueue(db, settings, lambda: datetime.now(timezone.utc)).parked(limit)
    return [ParkedItem(id=i, error=e, parked_at=at.isoformat() if at else None, attempts=n, bytes=size)
            for i, e, at, n, size in rows]


async def replay(settings: Settings, db: Database | None, ids: set[str] | None, now: datetime) -> list[str]:
    """Put the parked items named in `ids` (every one, with None) back on the inbound
    queue; returns the ids put back."""
    if settings.amqp_url:
        return await _dlq_replay(settings, ids)
    assert db is not None
    return await EmbeddedQueue(db, settings, lambda: now).unpark(ids)


async def _dlq_list(settings: Settings, limit: int) -> list[ParkedItem]:
    from worker.queue.amqp import H_ATTEMPTS, H_ERROR, H_PARKED_AT, Broker, header_count

    broker = Broker(settings)
    await broker.connect()
    try:
        channel = await broker.channel(confirms=False)
        dlq = (await channel.get_queue(settings.amqp.dead_letter_queue, ensure=False))
        out = []
        while len(out) < limit and (message := await dlq.get(no_ack=False, fail=False)) is not None:
            headers = message.headers or {}
            out.append(ParkedItem(id=str(message.message_id or ""), error=_error(headers, H_ERROR),
                                  parked_at=str(headers[H_PARKED_AT]) if H_PARKED_AT in headers else None,
                                  attempts=header_count(headers.get(H_ATTEMPTS)) or None,
                                  bytes=len(message.body)))
        await channel.close()                   # unacknowledged: every message stays parked
        return out
    finally:
        await broker.close()


async def _dlq_replay(settings: Settings, ids: set[str] | None) -> list[str]:
    import aio_pika

    from worker.queue.amqp import H_ATTEMPTS, H_EARLIER_ATTEMPTS, H_ERROR, H_PARKED_AT, Broker, confirmed

    broker = Broker(settings)
    await broker.connect()
    replayed: list[str] = []
    try:
        channel = await broker.channel(confirms=True)
        dlq = await channel.get_queue(settings.amqp.dead_letter_queue, ensure=False)
        while (message := await dlq.get(no_ack=False, fail=False)) is not None:
            item_id = str(message.message_id or "")
            if ids is not None and item_id not in ids:
                continue                        # left unacknowledged: it stays parked
            # What parking added goes, and so do the broker's death records: the item
            # starts afresh (the quorum queue counts its deliveries anew by itself).
            headers = {k: v for k, v in (message.headers or {}).items()
                       if k not in (H_ERROR, H_ATTEMPTS, H_PARKED_AT, H_EARLIER_ATTEMPTS)
                       and not k.startswith(("x-death", "x-first-death", "x-last-death"))}
            try:
                result = await channel.default_exchange.publish(aio_pika.Message(
                    message.body, headers=headers, content_type=message.content_type,
                    message_id=message.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=settings.amqp.inbound_queue, mandatory=True, timeout=settings.amqp.publish_timeout)
            except Exception as exc:            # noqa: BLE001 - unroutable, timeout, connection lost
                result = exc
            if not confirmed(result):
                raise QueueUnavailable(f"the inbound queue did not confirm {item_id[:16]}; it stays parked")
            await message.ack()                 # only once it is back on the inbound queue
            replayed.append(item_id)
        await channel.close()
        return replayed
    finally:
        await broker.close()


def _error(headers: dict[str, Any], key: str) -> str:
    """Our error header; for a message RabbitMQ dead-lettered by itself (the delivery
    limit: it killed its consumer each time), what the broker recorded."""
    if headers.get(key):
        return str(headers[key])
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return f"dead-lettered by RabbitMQ: {deaths[0].get('reason')} (delivered {deaths[0].get('count')} times)"
    return ""
