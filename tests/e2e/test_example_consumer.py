"""examples/consumer.py against the real RabbitMQ: what the update contract asks of a
consumer (docs/updates.md), shown by the example the teams start from."""

from __future__ import annotations

import pytest

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika

from tests.conftest import port_open, service_missing
from tests.integration.test_amqp import RABBIT_URL

REPO = Path(__file__).resolve().parents[2]


def update(seq: int, unit: str | None, channel: str, state: str, event: str) -> dict[str, object]:
    return {"schema_version": 1, "event_id": event, "contact_id": 7, "address": "anna@example.se",
            "unit": unit, "channel": channel, "state": state, "reason": "test", "source": "page",
            "verified": True, "occurred_at": "2026-03-01T10:00:00+00:00", "sequence": seq}


@pytest.mark.rabbitmq
async def test_the_example_consumer_applies_per_target_dedupes_and_ignores_only_older_news():
    if not port_open("127.0.0.1", 5672):
        service_missing("RabbitMQ on 127.0.0.1:5672")
    rabbit = RABBIT_URL
    name = f"x{uuid.uuid4().hex[:10]}"
    exchange, queue = f"{name}.updates", f"{name}.crm"
    proc = subprocess.Popen([sys.executable, "examples/consumer.py", "--url", rabbit, "--queue", queue,
                             "--exchange", exchange], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    conn = await aio_pika.connect(rabbit)
    try:
        first = await asyncio.to_thread(proc.stdout.readline)
        assert first.startswith("waiting for updates"), first
        ch = await conn.channel()
        x = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        newer = update(3, "alumni", "email", "unsubscribed", "e3")
        sent = [
            ("preference.alumni.email", newer),
            # Older, but for another target (every unit's sms): still news.
            ("preference.all.sms", update(1, "*", "sms", "unsubscribed", "e1")),
            ("preference.alumni.email", newer),                                    # delivered twice
            # Older, for the target seq 3 already set: ignored.
            ("preference.alumni.email", update(2, "alumni", "email", "subscribed", "e2")),
            ("preference.research.email", update(4, "research", "email", "unsubscribed", "e4")),  # not bound
            ("suppression.hard_bounce", update(5, None, "email", "suppressed", "e5")),
        ]
        for key, body in sent:
            await x.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                            routing_key=key)
        lines = [(await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)).strip() for _ in range(6)]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        finally:
            proc.kill()
            ch = await conn.channel()
            await ch.queue_delete(queue)
            await ch.exchange_delete(exchange)
            await conn.close()
    applied = [line for line in lines if not line.startswith("(")]
    notes = [line for line in lines if line.startswith("(")]
    assert [a.split()[0] for a in applied] == ["preference.alumni.email", "preference.all.sms",
                                               "suppression.hard_bounce"]
    assert "seq=3" in applied[0] and "unsubscribed" in applied[0] and "seq=1" in applied[1]
    assert notes == ["(contact 7: sequence jumped to 3; updates not bound here)",
                     "(older update for contact 7: seq 2; a newer one was applied)",
                     "(contact 7: sequence jumped to 5; updates not bound here)"]
