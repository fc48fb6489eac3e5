"""RabbitMQ in and out (production mode): aio-pika with publisher confirms.

In:  SMTP listeners publish each accepted message to the quorum queue
     `unsubd.inbound` and answer 250 only after the broker's confirm. Messages
     accepted while a publish awaits its confirm go together in the next one, as
     one batch message (`to_batch`); a consumer takes a batch apart into its items.
     Consumers ack only after the decision is committed; a failure is nacked
     and redelivered; after `max_attempts` the message is published to the
     dead-letter queue with its error in headers and then acked. The queue's own
     delivery limit (set explicitly: RabbitMQ's default differs between versions)
     is a backstop for messages that kill their consumer before it can say why.
     An outage is not counted: while the database is away the consumer holds its
     deliveries unsettled (the prefetch window then keeps more from coming) and
     applies them once it answers; nothing is nacked, so x-delivery-count does not
     grow. A delivery that comes back because our channel or connection was lost
     (RabbitMQ counts that too) has the lost delivery subtracted, when it comes back
     to this process; one given back because the consumer stopped during an outage
     is published again with its attempts so far (H_EARLIER_ATTEMPTS), uncounted.
     Heavy items (over consumer.heavy_bytes) go to a queue of their own, the bulk queue
     `<inbound_queue>.bulk` (same arguments), chosen at accept time by size, never in a
     batch. A consumer takes the bulk queue on a channel of its own whose prefetch is
     consumer.heavy_concurrency, so heavy items can never fill the inbound queue's
     prefetch window, and ordinary mail is delivered past them (issue 22).
Out: the relay publishes outbox rows to the topic exchange `unsubd.updates`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import aio_pika
import yarl
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pamqp.commands import Basic

from config import Settings
from handlers.model import Inbound, item_key
from worker.pipeline.consumer import Consumer, Outcome
from worker.store.db import GroupCommit
from worker.errors import QueueUnavailable, is_outage
from worker.outbox.relay import OutboundUpdate
from worker.queue.parked import DLQ_ARGUMENTS, ensure_dead_letter_queue

log = logging.getLogger("unsubd.amqp")

H_MAIL_FROM, H_RCPT_TOS, H_RECEIVED_AT, H_SOURCE = (
    "x-unsubd-mail-from", "x-unsubd-rcpt-tos", "x-unsubd-received-at", "x-unsubd-source")
H_ERROR, H_ATTEMPTS, H_PARKED_AT = "x-unsubd-error", "x-unsubd-attempts", "x-unsubd-parked-at"
# Attempts an item had inside a batch before it was published again on its own.
H_EARLIER_ATTEMPTS = "x-unsubd-earlier-attempts"
BATCH_TYPE = "application/x-unsubd-batch"
BATCH_VERSION = 1
# Delivery attempts beyond our own max_attempts before RabbitMQ dead-letters by itself.
DELIVERY_LIMIT_MARGIN = 2
# Message ids whose delivery was lost with our channel, remembered (at most this many)
# so that their redelivery is not counted as an attempt.
FORGIVEN_MAX = 10_000


@dataclass(frozen=True)
class Topology:
    inbound: aio_pika.abc.AbstractQueue
    dead_letter_exchange: aio_pika.abc.AbstractExchange
    updates: aio_pika.abc.AbstractExchange


class Broker:
    """One robust connection and the topology every role relies on."""

    def __init__(self, settings: Settings) -> None:
        assert settings.amqp_url is not None
        self._settings = settings
        self.names = settings.amqp
        self.connection: AbstractRobustConnection | None = None

    async def connect(self) -> None:
        """Connect and declare; raises QueueUnavailable if the broker cannot be reached."""
        try:
            self.connection = await aio_pika.connect_robust(
                self._settings.amqp_url, reconnect_interval=self.names.reconnect_interval, timeout=10,
                client_properties={"connection_name": "unsubd"})
        except Exception as exc:              # noqa: BLE001 - refused, DNS, auth, timeout
            raise QueueUnavailable(f"cannot reach RabbitMQ at {_redact(self._settings.amqp_url)}: "
                                   f"{type(exc).__name__}: {exc}"[:300]) from exc
        await ensure_dead_letter_queue(self.connection, self.names)     # a classic queue: worker/queue/parked.py
        channel = await self.connection.channel()
        try:
            await self.declare(channel)
        finally:
            await channel.close()

    async def declare(self, channel: AbstractChannel) -> Topology:
        """Declare exchanges and queues on `channel` (idempotent; arguments must match existing ones).

        Every role declares on its own channel: aio-pika's robust channel restores, after
        a reconnect, only what was declared through it (and the consumers on it).
        """
        n = self.names
        dlx = await channel.declare_exchange(n.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        # Classic, not quorum: listing parked items must not count as deliveries (worker/queue/parked.py).
        dlq = await channel.declare_queue(n.dead_letter_queue, durable=True, arguments=DLQ_ARGUMENTS)
        await dlq.bind(dlx, routing_key=n.dead_letter_queue)
        inbound = await channel.declare_queue(n.inbound_queue, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": self._settings.consumer.max_attempts + DELIVERY_LIMIT_MARGIN,
            "x-dead-letter-exchange": n.dead_letter_exchange,
            "x-dead-letter-routing-key": n.dead_letter_queue,
        })
        updates = await channel.declare_exchange(n.updates_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        return Topology(inbound=inbound, dead_letter_exchange=dlx, updates=updates)

    @property
    def bulk_queue(self) -> str:
        """The heavy items' queue, named after the inbound queue."""
        return f"{self.names.inbound_queue}.bulk"

    async def declare_bulk(self, channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
        """Declare the bulk queue on `channel`, with the inbound queue's arguments (its
        dead-lettering included); `declare` first, which makes the dead-letter exchange."""
        n = self.names
        return await channel.declare_queue(self.bulk_queue, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": self._settings.consumer.max_attempts + DELIVERY_LIMIT_MARGIN,
            "x-dead-letter-exchange": n.dead_letter_exchange,
            "x-dead-letter-routing-key": n.dead_letter_queue,
        })

    def queue_for(self, item: Inbound) -> str:
        """Where `item` is published: the bulk queue if it is heavy, else the inbound queue."""
        return self.bulk_queue if len(item.raw) > self._settings.consumer.heavy_bytes else self.names.inbound_queue

    async def channel(self, confirms: bool = True) -> AbstractChannel:
        assert self.connection is not None, "connect() first"
        return await self.connection.channel(publisher_confirms=confirms)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


def _redact(url: str | None) -> str:
    parsed = yarl.URL(url or "")
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


def header_count(value: Any) -> int:
    """A count from a message header; anything but a non-negative whole number is 0."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def confirmed(result: Any) -> bool:
    return isinstance(result, Basic.Ack)


JSON_TYPES = ("click", "bounce", "complaint")     # handlers.events.click.decide_queue_item; docs/inbound.md


def to_message(item: Inbound, earlier_attempts: int = 0) -> aio_pika.Message:
    headers: dict[str, Any] = {H_MAIL_FROM: item.mail_from, H_RCPT_TOS: list(item.rcpt_tos),
                               H_RECEIVED_AT: item.received_at.isoformat(), H_SOURCE: item.source}
    if earlier_attempts:
        headers[H_EARLIER_ATTEMPTS] = earlier_attempts
    return aio_pika.Message(
        item.raw, message_id=item.id, content_type="message/rfc822",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, timestamp=item.received_at, headers=headers)


def from_message(message: AbstractIncomingMessage, now: datetime) -> Inbound:
    """The Inbound carried by a delivery. Raises ValueError for a JSON item this version cannot take."""
    headers = message.headers or {}
    if (message.content_type or "").startswith("application/json"):
        try:
            data = json.loads(message.body)
            kind = data.get("type")
        except (ValueError, AttributeError):
            raise ValueError("a JSON item whose body is not a JSON object") from None
        if kind not in JSON_TYPES:
            raise ValueError(f"JSON items of type {str(kind)[:40]!r} are not handled by this version")
        # The same event delivered twice is one item: dedupe on its content, not on
        # message_id, which client libraries fill with a random value when the
        # publisher leaves it out (aiormq does, for publisher confirms).
        return Inbound(id=item_key(kind, message.body), raw=message.body,
                       mail_from=None, rcpt_tos=(), received_at=now, source="queue")
    received = headers.get(H_RECEIVED_AT)
    try:
        received_at = datetime.fromisoformat(str(received)) if received else now
    except ValueError:
        received_at = now
    rcpts = headers.get(H_RCPT_TOS) or []
    return Inbound(
        id=message.message_id or item_key("amqp", message.body),
        raw=message.body,
        mail_from=None if headers.get(H_MAIL_FROM) is None else str(headers.get(H_MAIL_FROM)),
        rcpt_tos=tuple(str(r) for r in rcpts) if isinstance(rcpts, list | tuple) else (),
        received_at=received_at,
        source=str(headers.get(H_SOURCE) or "amqp"),
    )


def to_batch(items: list[Inbound]) -> aio_pika.Message:
    """Several items as one message: a JSON index on the first line, then the raw bytes
    of each item in order, unencoded. The index gives each item's envelope and length."""
    index = {"v": BATCH_VERSION, "items": [
        {"id": i.id, "mail_from": i.mail_from, "rcpt_tos": list(i.rcpt_tos),
         "received_at": i.received_at.isoformat(), "source": i.source, "bytes": len(i.raw)} for i in items]}
    body = b"".join([json.dumps(index, ensure_ascii=True).encode(), b"\n", *(i.raw for i in items)])
    return aio_pika.Message(body, message_id=f"batch-{items[0].id}", content_type=BATCH_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def from_batch(body: bytes) -> list[Inbound]:
    """The items of a batch message. Raises ValueError, naming what is wrong, for anything
    `to_batch` would not have written."""
    head, newline, rest = body.partition(b"\n")
    if not newline:
        raise ValueError("a batch without its index line")
    try:
        index = json.loads(head)
    except ValueError:
        raise ValueError("a batch whose index is not JSON") from None
    if not isinstance(index, dict) or index.get("v") != BATCH_VERSION or not isinstance(index.get("items"), list):
        raise ValueError(f"a batch of a version this consumer cannot read: {str(index)[:60]!r}")
    items, offset = [], 0
    for n, entry in enumerate(index["items"]):
        try:
            size, rcpts, mail_from = entry["bytes"], entry["rcpt_tos"], entry["mail_from"]
            if not (isinstance(size, int) and 0 <= size <= len(rest) - offset and isinstance(rcpts, list)
                    and all(isinstance(r, str) for r in rcpts) and isinstance(entry["id"], str) and entry["id"]
                    and (mail_from is None or isinstance(mail_from, str))):
                raise ValueError
            items.append(Inbound(id=entry["id"], raw=rest[offset:offset + size], mail_from=mail_from,
                                 rcpt_tos=tuple(rcpts), received_at=datetime.fromisoformat(entry["received_at"]),
                                 source=str(entry.get("source") or "amqp")))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"item {n} of a batch is malformed") from None
        offset += size
    if not items or offset != len(rest):
        raise ValueError(f"a batch whose index accounts for {offset} of its {len(rest)} bytes")
    return items


class AmqpEnqueue:
    """The SMTP listener's durable enqueue: returns only after the broker's confirm.

    Items that arrive while a publish awaits its confirm are published together next
    (group commit): one message and one confirm for many sessions' mail, which is most
    of what the broker and aio-pika cost per message. An item that arrives alone is
    published at once, on its own. A heavy item (Broker.queue_for) is published alone to
    the bulk queue.
    """

    def __init__(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        self._channel: AbstractChannel | None = None
        self._max_bytes = settings.amqp.inbound_batch_bytes
        self._unbatched = settings.amqp.inbound_batch == 1
        self._group: GroupCommit[Inbound, bool] = GroupCommit(
            self._publish, max_batch=settings.amqp.inbound_batch, parallel=1)
        self.messages = 0                        # confirmed publishes
        self.items = 0                           # items they carried

    async def start(self) -> None:
        self._channel = await self._broker.channel(confirms=True)
        await self._broker.declare(self._channel)
        await self._broker.declare_bulk(self._channel)

    async def __call__(self, item: Inbound) -> bool:
        if self._channel is None:
            raise QueueUnavailable("not connected to the broker")
        queue = self._broker.queue_for(item)
        if self._unbatched or queue != self._broker.names.inbound_queue:   # its own publish, side by side
            result = await self._publish_one([item], queue)
            if isinstance(result, BaseException):
                raise result
            return result
        return await self._group.submit(item)

    async def _publish(self, items: list[Inbound]) -> list[bool | BaseException]:
        groups: list[list[Inbound]] = []
        size = self._max_bytes
        for item in items:
            if size + len(item.raw) > self._max_bytes:
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += len(item.raw)
        results = await asyncio.gather(*(self._publish_one(g) for g in groups))
        return [r for g, r in zip(groups, results) for _ in g]

    async def _publish_one(self, items: list[Inbound], queue: str | None = None) -> bool | BaseException:
        assert self._channel is not None
        message = to_message(items[0]) if len(items) == 1 else to_batch(items)
        try:
            result = await self._channel.default_exchange.publish(
                message, routing_key=queue or self._broker.names.inbound_queue, mandatory=True,
                timeout=self._broker.names.publish_timeout)
        except Exception as exc:          # noqa: BLE001 - broker down, closed channel, unroutable, timeout
            return QueueUnavailable(f"broker: {type(exc).__name__}")
        if not confirmed(result):
            return QueueUnavailable(f"broker did not confirm: {type(result).__name__}")
        self.messages += 1
        self.items += len(items)
        return True


class AmqpPublisher:
    """The relay's Publisher for production: every update confirmed by the broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def start(self) -> None:
        channel = await self._broker.channel(confirms=True)
        self._exchange = (await self._broker.declare(channel)).updates

    async def publish(self, updates: list[OutboundUpdate]) -> None:
        if self._exchange is None:
            raise QueueUnavailable("not connected to the broker")
        exchange = self._exchange
        timeout = self._broker.names.publish_timeout
        # Sent in order on one channel (so in order per contact); confirmed together.
        results = await asyncio.gather(*(
            exchange.publish(aio_pika.Message(
                json.dumps(u.payload, ensure_ascii=False).encode(), content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"{u.payload['event_id']}:{u.payload['sequence']}",
                headers={"x-unsubd-sequence": u.payload["sequence"]}),
                routing_key=u.routing_key, mandatory=False, timeout=timeout)
            for u in updates), return_exceptions=True)
        failed = [r for r in results if not confirmed(r)]
        if failed:
            raise QueueUnavailable(f"{len(failed)} of {len(updates)} updates not confirmed: {failed[0]!r}"[:300])


class AmqpConsumer:
    """Feeds deliveries of `unsubd.inbound` to Consumer.handle and acts on the outcome."""

    def __init__(self, broker: Broker, consumer: Consumer, settings: Settings,
                 clock: Callable[[], datetime]) -> None:
        self._broker = broker
        self._consumer = consumer
        self._settings = settings
        self._clock = clock
        self._in_flight: set[asyncio.Task[None]] = set()
        self._default: aio_pika.abc.AbstractExchange | None = None
        self.dead_lettered = 0
        self.batches_split = 0
        self.released = 0                        # deliveries published again uncounted (stopped in an outage)
        # Deliveries lost with the channel, by message id: RabbitMQ counts their
        # redelivery in x-delivery-count, but they were not the message's failure.
        self._forgiven: OrderedDict[str, int] = OrderedDict()
        self._holding: Counter[str] = Counter()  # message ids being handled now

    async def run(self, stopping: asyncio.Event) -> None:
        self._consumer.stopping = stopping
        try:
            await self._run(stopping)
        finally:
            await self._consumer.outage.close()

    async def _run(self, stopping: asyncio.Event) -> None:
        channel = await self._broker.channel(confirms=True)
        await channel.set_qos(prefetch_count=self._broker.names.prefetch)
        topology = await self._broker.declare(channel)
        queue, dlx = topology.inbound, topology.dead_letter_exchange
        self._default = channel.default_exchange
        # The heavy lane: the bulk queue on a channel of its own, with a small prefetch.
        bulk_channel = await self._broker.channel(confirms=True)
        await bulk_channel.set_qos(prefetch_count=self._consumer.heavy_slots)
        bulk = await self._broker.declare_bulk(bulk_channel)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.add(task)
            try:
                await self._deliver(message, dlx)
            finally:
                if task is not None:
                    self._in_flight.discard(task)

        tags = [(queue, await queue.consume(on_message)), (bulk, await bulk.consume(on_message))]
        await stopping.wait()
        for q, tag in tags:
            try:
                await q.cancel(tag)              # no new deliveries; unacked ones return to the queue
            except Exception as exc:             # noqa: BLE001
                log.warning("cancelling the consumer failed: %s", type(exc).__name__)
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        await bulk_channel.close()
        await channel.close()

    def _attempts(self, message: AbstractIncomingMessage) -> int:
        """This delivery's attempt: earlier deliveries (quorum queues count them in
        x-delivery-count, including those lost with a channel) and attempts before a
        re-publish, less the deliveries this process lost without the message's fault."""
        headers = message.headers or {}
        mid = message.message_id or ""
        forgiven = self._forgiven.pop(mid, 0) if mid else 0
        if mid and self._holding[mid]:
            forgiven += 1                        # its earlier delivery is still being handled here: lost with its channel
        counted = header_count(headers.get("x-delivery-count")) + header_count(headers.get(H_EARLIER_ATTEMPTS))
        return max(0, counted - forgiven) + 1

    def _forgive(self, message: AbstractIncomingMessage) -> None:
        """The delivery could not be settled (the broker or our channel went away): its
        redelivery is not the message's failure."""
        mid = message.message_id
        if not mid:
            return
        self._forgiven[mid] = self._forgiven.get(mid, 0) + 1
        self._forgiven.move_to_end(mid)
        while len(self._forgiven) > FORGIVEN_MAX:
            self._forgiven.popitem(last=False)

    async def _deliver(self, message: AbstractIncomingMessage, dlx: aio_pika.abc.AbstractExchange) -> None:
        mid = message.message_id or ""
        attempts = self._attempts(message)
        self._holding[mid] += 1
        try:
            await self._deliver_counted(message, dlx, attempts)
        finally:
            self._holding[mid] -= 1
            if self._holding[mid] <= 0:
                del self._holding[mid]

    async def _deliver_counted(self, message: AbstractIncomingMessage, dlx: aio_pika.abc.AbstractExchange,
                               attempts: int) -> None:
        headers = message.headers or {}
        try:
            if message.content_type == BATCH_TYPE:
                await self._deliver_batch(message, dlx, attempts)
                return
            try:
                item = from_message(message, self._clock())
            except ValueError as exc:
                outcome = Outcome.park(str(exc))
            else:
                outcome = await self._consumer.handle(item, attempts)
            if outcome.action == "done":
                await message.ack()
            elif outcome.action == "retry":
                await asyncio.sleep(self._backoff(attempts))
                await message.nack(requeue=True)
            elif outcome.action == "release":
                await self._publish_alone([item], attempts - 1)
                self.released += 1
                await message.ack()
            else:
                await self._dead_letter(dlx, message.body, dict(headers), message.content_type,
                                        message.message_id, outcome.error, attempts)
                await message.ack()
        except Exception as exc:                 # noqa: BLE001 - the delivery returns to the queue
            if is_outage(exc):
                self._forgive(message)
            log.warning("settling a delivery failed; it will be redelivered: %s", type(exc).__name__,
                        extra={"item_id": message.message_id})

    async def _deliver_batch(self, message: AbstractIncomingMessage, dlx: aio_pika.abc.AbstractExchange,
                             attempts: int) -> None:
        """A listener's batch: its items are handled side by side and settled one by one.

        The batch is acked once every item is done, dead-lettered alone (poison) or
        published again alone (to be retried). A batch delivered before without being
        settled may hold an item that kills its consumer, so it is only taken apart:
        each item then meets the queue's delivery limit on its own.
        """
        try:
            items = from_batch(message.body)
        except ValueError as exc:
            await self._dead_letter(dlx, message.body, dict(message.headers or {}), message.content_type,
                                    message.message_id, str(exc), attempts)
            await message.ack()
            return
        if attempts > 1:
            self.batches_split += 1
            await self._publish_alone(items, attempts - 1)
            await message.ack()
            return
        outcomes = await asyncio.gather(*(self._consumer.handle(i, attempts) for i in items))
        parked = [(i, o) for i, o in zip(items, outcomes) if o.action == "park"]
        again = [i for i, o in zip(items, outcomes) if o.action == "retry"]
        released = [i for i, o in zip(items, outcomes) if o.action == "release"]
        await asyncio.gather(*(self._dead_letter_item(dlx, i, o.error, attempts) for i, o in parked))
        if released:                             # an outage, then a stop: this attempt not counted
            await self._publish_alone(released, attempts - 1)
            self.released += len(released)
        if again:
            await asyncio.sleep(self._backoff(attempts))
            await self._publish_alone(again, attempts)
        await message.ack()

    def _backoff(self, attempts: int) -> float:
        c = self._settings.consumer
        return min(30.0, c.retry_base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)

    async def _publish_alone(self, items: list[Inbound], earlier_attempts: int) -> None:
        """Each item back on the inbound queue as a message of its own, with the attempts it
        has had; returns once the broker has confirmed them all."""
        assert self._default is not None
        results = await asyncio.gather(*(self._default.publish(
            to_message(i, earlier_attempts), routing_key=self._broker.queue_for(i), mandatory=True,
            timeout=self._broker.names.publish_timeout) for i in items), return_exceptions=True)
        if not all(confirmed(r) for r in results):
            raise QueueUnavailable("the inbound queue did not confirm the items of a batch")

    async def _dead_letter_item(self, dlx: aio_pika.abc.AbstractExchange, item: Inbound, error: str,
                                attempts: int) -> None:
        message = to_message(item)
        await self._dead_letter(dlx, message.body, dict(message.headers), message.content_type, item.id,
                                error, attempts)

    async def _dead_letter(self, dlx: aio_pika.abc.AbstractExchange, body: bytes, headers: dict[str, Any],
                           content_type: str | None, message_id: str | None, error: str, attempts: int) -> None:
        headers.pop(H_EARLIER_ATTEMPTS, None)
        headers.update({H_ERROR: error[:1000], H_ATTEMPTS: attempts,
                        H_PARKED_AT: datetime.now(timezone.utc).isoformat()})
        result = await dlx.publish(aio_pika.Message(
            body, headers=headers, content_type=content_type, message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=self._broker.names.dead_letter_queue,
            timeout=self._broker.names.publish_timeout)
        if not confirmed(result):
            raise QueueUnavailable("dead-letter queue did not confirm")
        self.dead_lettered += 1
        log.error("dead-lettered: %s", error[:200], extra={"item_id": message_id})
