"""RabbitMQ in and out (production mode): aio-pika with publisher confirms.

In:  SMTP listeners publish each accepted message to the quorum queue
     `unsubd.inbound` and answer 250 only after the broker's confirm.
     Consumers ack only after the decision is committed; a failure is nacked
     and redelivered; after `max_attempts` the message is published to the
     dead-letter queue with its error in headers and then acked. The queue's own
     delivery limit (set explicitly: RabbitMQ's default differs between versions)
     is a backstop for messages that kill their consumer before it can say why.
Out: the relay publishes outbox rows to the topic exchange `unsubd.updates`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import aio_pika
import yarl
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pamqp.commands import Basic

from config import Settings
from handlers.model import Inbound, item_key
from worker.consumer import Consumer, Outcome
from worker.errors import QueueUnavailable
from worker.relay import OutboundUpdate

log = logging.getLogger("unsubd.amqp")

H_MAIL_FROM, H_RCPT_TOS, H_RECEIVED_AT, H_SOURCE = (
    "x-unsubd-mail-from", "x-unsubd-rcpt-tos", "x-unsubd-received-at", "x-unsubd-source")
H_ERROR, H_ATTEMPTS, H_PARKED_AT = "x-unsubd-error", "x-unsubd-attempts", "x-unsubd-parked-at"
# Delivery attempts beyond our own max_attempts before RabbitMQ dead-letters by itself.
DELIVERY_LIMIT_MARGIN = 2


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
        dlq = await channel.declare_queue(n.dead_letter_queue, durable=True,
                                          arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, routing_key=n.dead_letter_queue)
        inbound = await channel.declare_queue(n.inbound_queue, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": self._settings.consumer.max_attempts + DELIVERY_LIMIT_MARGIN,
            "x-dead-letter-exchange": n.dead_letter_exchange,
            "x-dead-letter-routing-key": n.dead_letter_queue,
        })
        updates = await channel.declare_exchange(n.updates_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        return Topology(inbound=inbound, dead_letter_exchange=dlx, updates=updates)

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


def _confirmed(result: Any) -> bool:
    return isinstance(result, Basic.Ack)


JSON_TYPES = ("click", "bounce", "complaint")     # handlers.click.decide_queue_item; docs/inbound.md


def to_message(item: Inbound) -> aio_pika.Message:
    return aio_pika.Message(
        item.raw, message_id=item.id, content_type="message/rfc822",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, timestamp=item.received_at,
        headers={H_MAIL_FROM: item.mail_from, H_RCPT_TOS: list(item.rcpt_tos),
                 H_RECEIVED_AT: item.received_at.isoformat(), H_SOURCE: item.source})


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


class AmqpEnqueue:
    """The SMTP listener's durable enqueue: returns only after the broker's confirm."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._channel: AbstractChannel | None = None

    async def start(self) -> None:
        self._channel = await self._broker.channel(confirms=True)
        await self._broker.declare(self._channel)

    async def __call__(self, item: Inbound) -> bool:
        if self._channel is None:
            raise QueueUnavailable("not connected to the broker")
        try:
            result = await self._channel.default_exchange.publish(
                to_message(item), routing_key=self._broker.names.inbound_queue, mandatory=True,
                timeout=self._broker.names.publish_timeout)
        except Exception as exc:          # noqa: BLE001 - broker down, closed channel, unroutable, timeout
            raise QueueUnavailable(f"broker: {type(exc).__name__}") from exc
        if not _confirmed(result):
            raise QueueUnavailable(f"broker did not confirm: {type(result).__name__}")
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
        failed = [r for r in results if not _confirmed(r)]
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
        self.dead_lettered = 0

    async def run(self, stopping: asyncio.Event) -> None:
        channel = await self._broker.channel(confirms=True)
        await channel.set_qos(prefetch_count=self._broker.names.prefetch)
        topology = await self._broker.declare(channel)
        queue, dlx = topology.inbound, topology.dead_letter_exchange

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.add(task)
            try:
                await self._deliver(message, dlx)
            finally:
                if task is not None:
                    self._in_flight.discard(task)

        tag = await queue.consume(on_message)
        await stopping.wait()
        try:
            await queue.cancel(tag)              # no new deliveries; unacked ones return to the queue
        except Exception as exc:                 # noqa: BLE001
            log.warning("cancelling the consumer failed: %s", type(exc).__name__)
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        await channel.close()

    async def _deliver(self, message: AbstractIncomingMessage, dlx: aio_pika.abc.AbstractExchange) -> None:
        # Quorum queues count earlier deliveries in x-delivery-count.
        attempts = int((message.headers or {}).get("x-delivery-count") or 0) + 1
        try:
            item = from_message(message, self._clock())
        except ValueError as exc:
            outcome = Outcome.park(str(exc))
        else:
            outcome = await self._consumer.handle(item, attempts)
        try:
            if outcome.action == "done":
                await message.ack()
            elif outcome.action == "retry":
                c = self._settings.consumer
                await asyncio.sleep(min(30.0, c.retry_base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0))
                await message.nack(requeue=True)
            else:
                await self._dead_letter(message, dlx, outcome.error, attempts)
                await message.ack()
        except Exception as exc:                 # noqa: BLE001 - the delivery returns to the queue
            log.warning("settling a delivery failed; it will be redelivered: %s", type(exc).__name__,
                        extra={"item_id": message.message_id})

    async def _dead_letter(self, message: AbstractIncomingMessage, dlx: aio_pika.abc.AbstractExchange,
                           error: str, attempts: int) -> None:
        headers = dict(message.headers or {})
        headers.update({H_ERROR: error[:1000], H_ATTEMPTS: attempts,
                        H_PARKED_AT: datetime.now(timezone.utc).isoformat()})
        result = await dlx.publish(aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type, message_id=message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=self._broker.names.dead_letter_queue,
            timeout=self._broker.names.publish_timeout)
        if not _confirmed(result):
            raise QueueUnavailable("dead-letter queue did not confirm")
        self.dead_lettered += 1
        log.error("dead-lettered: %s", error[:200], extra={"item_id": message.message_id})
