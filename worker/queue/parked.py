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
them back unacknowledged. A quorum queue counts each such return as a delivery, and
RabbitMQ 4 gives quorum queues a default delivery limit (20), after which it drops the
message: looking at the parked page twenty times would lose what is parked. Nor is
there one setting for "no limit" across versions: RabbitMQ 4 reads `x-delivery-limit:
-1` as unlimited, but 3.10 accepts -1 and then drops every message at its first return
(tried against 3.10.8). So the dead-letter queue is a classic durable queue
(DLQ_ARGUMENTS), which counts no deliveries, has no delivery limit, and puts a returned
message back in its place. Its messages are persistent, so they outlive a broker
restart; unlike a quorum queue it is kept on one node of a cluster.

A dead-letter queue declared the old way (a quorum queue) cannot be declared again
with other arguments, nor changed. `ensure_dead_letter_queue`, run by every process as
it connects (worker.queue.amqp.Broker.connect), moves its messages out, one at a time
with publisher confirms, to a holding queue bound where the dead letters arrive, drops
the emptied old queue, declares the classic one and moves them back, in their order.
Dead letters that arrive meanwhile go to the holding queue and come along. A process
that stops halfway leaves the holding queue, which the next one empties.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from config import Settings
from worker.store.db import Database
from worker.errors import QueueUnavailable
from worker.queue.embedded import EmbeddedQueue

log = logging.getLogger("unsubd.amqp")

DLQ_ARGUMENTS = {"x-queue-type": "classic"}
HOLDING_SUFFIX = ".moving"          # the holding queue of a move: "<dead_letter_queue>.moving"
MOVE_TRIES = 5                      # processes moving the same old queue at once: each tries again


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
        await broker.declare_bulk(channel)     # a heavy item goes back to its own lane (issue 22)
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
                    routing_key=broker.bulk_queue if len(message.body) > settings.consumer.heavy_bytes
                    else settings.amqp.inbound_queue, mandatory=True, timeout=settings.amqp.publish_timeout)
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


# -- the dead-letter queue's declaration, and the move from a quorum queue ------------------------------


async def ensure_dead_letter_queue(connection: Any, names: Any) -> None:
    """Make sure the dead-letter queue `names.dead_letter_queue` is a classic durable queue
    bound to `names.dead_letter_exchange`, moving the messages of one declared the old way
    (a quorum queue) across without losing or reordering any. Raises QueueUnavailable
    when the move cannot finish (a publish not confirmed); nothing is lost then."""
    import aiormq

    for _ in range(MOVE_TRIES):
        try:
            if await _declares_as_classic(connection, names.dead_letter_queue):
                await _empty_holding_queue(connection, names)
                return
            await _move_to_classic(connection, names)
        except (aiormq.exceptions.ChannelNotFoundEntity, aiormq.exceptions.ChannelPreconditionFailed):
            continue                            # another process was moving it at the same moment
    raise QueueUnavailable(f"could not make {names.dead_letter_queue} a classic queue; its messages stay")


async def _declares_as_classic(connection: Any, name: str) -> bool:
    """Whether `name` can be declared with DLQ_ARGUMENTS (it is a classic queue, or absent,
    and then is one). A refusal closes the channel, so a channel of its own is used."""
    import aiormq

    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.declare_queue(name, durable=True, arguments=DLQ_ARGUMENTS)
        return True
    except aiormq.exceptions.ChannelPreconditionFailed:
        log.warning("the dead-letter queue %s is a queue of another type (declared by an earlier release); "
                    "moving its messages to a classic queue", name)
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def _move_to_classic(connection: Any, names: Any) -> None:
    import aio_pika

    name, holding_name = names.dead_letter_queue, names.dead_letter_queue + HOLDING_SUFFIX
    channel = await connection.channel(publisher_confirms=True)
    try:
        dlx = await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        holding = await channel.declare_queue(holding_name, durable=True, arguments=DLQ_ARGUMENTS)
        await holding.bind(dlx, routing_key=name)       # dead letters from now on wait here
        old = await channel.get_queue(name, ensure=False)
        await old.unbind(dlx, routing_key=name)
        moved = await _move(channel, old, holding_name, names)
        # A quorum queue allows neither if-empty nor if-unused; it is unbound and empty.
        await old.delete(if_unused=False, if_empty=False)
    finally:
        if not channel.is_closed:
            await channel.close()
    # The rest on a new channel: RabbitMQ 3.10 closes the connection (INTERNAL_ERROR) when a
    # channel that delivered to the quorum queue publishes to the classic one of its name.
    await _empty_holding_queue(connection, names)
    log.warning("the dead-letter queue %s is now a classic queue; %d parked messages moved", name, moved)


async def _empty_holding_queue(connection: Any, names: Any) -> None:
    """Messages a stopped or concurrent move left in the holding queue go to the dead-letter queue."""
    import aio_pika
    import aiormq

    name, holding_name = names.dead_letter_queue, names.dead_letter_queue + HOLDING_SUFFIX
    channel = await connection.channel(publisher_confirms=True)
    try:
        try:
            holding = await channel.declare_queue(holding_name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return                              # the usual case: no move was ever needed, or it finished
        dlx = await channel.declare_exchange(names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        dlq = await channel.declare_queue(name, durable=True, arguments=DLQ_ARGUMENTS)
        await dlq.bind(dlx, routing_key=name)
        await holding.unbind(dlx, routing_key=name)
        await _move(channel, holding, name, names)
        await holding.delete(if_unused=False, if_empty=True)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _move(channel: Any, source: Any, target: str, names: Any) -> int:
    """Move every message of `source` to the queue `target`, in order: each is published
    (persistent, its properties and headers kept but the broker's delivery count) and
    acknowledged at the source only once the broker confirmed the copy."""
    import aio_pika

    from worker.queue.amqp import confirmed

    moved = 0
    while (message := await source.get(no_ack=False, fail=False)) is not None:
        headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
        try:
            result = await channel.default_exchange.publish(aio_pika.Message(
                message.body, headers=headers, content_type=message.content_type,
                content_encoding=message.content_encoding, message_id=message.message_id,
                timestamp=message.timestamp, type=message.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=target, mandatory=True, timeout=names.publish_timeout)
        except Exception as exc:                # noqa: BLE001 - unroutable, timeout, connection lost
            result = exc
        if not confirmed(result):               # unacknowledged: it goes back when the channel closes
            raise QueueUnavailable(f"{target} did not confirm a parked message; it stays where it was")
        await message.ack()
        moved += 1
    return moved
