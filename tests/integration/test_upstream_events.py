"""Upstream bounce and complaint events on the queue (issue 6 item 2; docs/inbound.md)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import aio_pika
import jsonschema
import pytest

from handlers.context import Context
from handlers.classify import classify
from handlers.model import ALL, ActionType, Inbound, Kind, item_key
from handlers.tokens import Keyring, link_headers, return_path, sign, sign_return_path
from worker.app import Worker
from worker.ops.contacts import import_rows, parse_csv
from tests.conftest import make_settings
from tests.integration.test_amqp import RABBIT_URL, SCHEMA, UpdateListener, names, rabbit  # noqa: F401 - fixtures
from tests.integration.test_smtp import wait_for

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "an-upstream-test-key-that-is-long-enough"
SETTINGS = make_settings(UNSUBD_TOKENS__KEYS=json.dumps({"k1": SECRET}))
K1 = Keyring({"k1": SECRET.encode()}, "k1")


def event(body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    item = Inbound(id=item_key("event", raw), raw=raw, mail_from=None, rcpt_tos=(), received_at=NOW, source="queue")
    return classify(item, Context.from_settings(SETTINGS), NOW)


# --------------------------------------------------------------------------- bounces


def test_a_hard_bounce_event_suppresses_the_address():
    d = event({"type": "bounce", "address": "Eva@Example.se", "status": "5.1.1",
               "diagnostic": "550 5.1.1 no such user", "message_id": "<m1@mail.example.org>", "at": "2026-03-01"})
    (a,) = d.actions
    assert (d.kind, d.source, a.type, a.address, a.status, a.reason) == (
        Kind.BOUNCE, "queue", ActionType.SUPPRESS, "eva@example.se", "5.1.1", "user_unknown")
    assert a.ref == "<m1@mail.example.org>" and d.evidence["return_path"] == {"form": "upstream"}


@pytest.mark.parametrize("body,expected", [
    ({"status": "4.2.2", "diagnostic": "mailbox full"}, ActionType.SOFT_BOUNCE),
    ({"status": "5.2.2", "diagnostic": "mailbox full"}, ActionType.SOFT_BOUNCE),
    ({"diagnostic": "550 user unknown"}, ActionType.SUPPRESS),
    ({"status": "5.7.1", "diagnostic": "rejected as spam"}, ActionType.SOFT_BOUNCE),
    ({"action": "delivered", "status": "2.0.0"}, ActionType.DELIVERED),
])
def test_bounce_events_are_read_like_a_dsn_group(body, expected):
    (a,) = event({"type": "bounce", "address": "eva@example.se", **body}).actions
    assert a.type is expected


def test_a_delay_event_changes_nothing():
    d = event({"type": "bounce", "address": "eva@example.se", "action": "delayed", "status": "4.4.1"})
    assert d.kind is Kind.BOUNCE and d.actions == () and not d.review


@pytest.mark.parametrize("body,why", [
    ({"type": "bounce", "status": "5.1.1"}, "no valid address"),
    ({"type": "bounce", "address": "not an address", "status": "5.1.1"}, "no valid address"),
    ({"type": "bounce", "address": "eva@example.se"}, "needs a status"),
    ({"type": "bounce", "address": "eva@example.se", "status": "5.1.1", "action": "exploded"}, "action must be"),
    ({"type": "bounce", "address": ["eva@example.se"], "status": "5.1.1"}, "no valid address"),
])
def test_unreadable_bounce_events_go_to_review_with_the_reason(body, why):
    d = event(body)
    assert d.review and d.actions == () and why in d.reason


def test_a_bounce_event_with_a_return_path_follows_the_mail_rules():
    signed = return_path(sign_return_path(8, "eva@example.se", "alumni", K1), "bounces", "mail.example.org")
    ok = event({"type": "bounce", "address": "eva@example.se", "status": "5.1.1", "return_path": signed})
    assert ok.actions[0].type is ActionType.SUPPRESS and ok.verified and ok.evidence["unit"] == "alumni"
    forged = event({"type": "bounce", "address": "eva@example.se", "status": "5.1.1",
                    "return_path": "bounces+" + "k" * 34 + "@mail.example.org"})
    # A tag that does not verify is evidence of forgery: recorded, never counted (issue 22).
    assert forged.actions == () and not forged.verified
    assert forged.evidence["recipients"][0]["proposed"] == "suppress"


# --------------------------------------------------------------------------- complaints


def test_a_complaint_event_suppresses_and_unsubscribes_the_named_unit():
    d = event({"type": "complaint", "address": "eva@example.se", "unit": "events", "at": "2026-03-01"})
    assert d.kind is Kind.COMPLAINT and d.source == "queue" and not d.review
    by_type = {a.type: a for a in d.actions}
    assert by_type[ActionType.SUPPRESS].address == "eva@example.se"
    assert by_type[ActionType.UNSUBSCRIBE].units == ("events",)
    assert by_type[ActionType.UNSUBSCRIBE].channels == ("email",)


def test_a_complaint_event_without_a_unit_unsubscribes_every_unit():
    d = event({"type": "complaint", "address": "eva@example.se"})
    assert next(a for a in d.actions if a.type is ActionType.UNSUBSCRIBE).units == ALL


def test_a_complaint_event_can_name_the_contact_by_our_token_alone():
    link = link_headers(sign(12, "research-news", "email", K1), "https://u.example.org", "unsubscribe",
                        "mail.example.org")["List-Unsubscribe"]
    d = event({"type": "complaint", "list_unsubscribe": link})
    assert d.verified and all(a.contact_id == 12 for a in d.actions)
    assert next(a for a in d.actions if a.type is ActionType.UNSUBSCRIBE).units == ("research-news",)


@pytest.mark.parametrize("body,why", [
    ({"type": "complaint"}, "names no recipient"),
    ({"type": "complaint", "address": "@@"}, "not a valid address"),
    ({"type": "complaint", "address": "eva@example.se", "unit": "no-such-unit"}, "unknown unit"),
])
def test_unreadable_complaint_events_go_to_review(body, why):
    d = event(body)
    assert d.review and d.actions == () and why in d.reason


def test_a_not_spam_event_changes_nothing():
    d = event({"type": "complaint", "address": "eva@example.se", "feedback_type": "not-spam"})
    assert d.actions == () and not d.review


# --------------------------------------------------------------------------- over RabbitMQ, into PostgreSQL


async def test_upstream_events_on_the_queue_become_published_updates(names, pg_url):  # noqa: F811
    settings = make_settings(pg_url, **names)
    async with UpdateListener(RABBIT_URL, settings.amqp.updates_exchange, "#") as listener:
        w = Worker(settings, roles=["consumer", "relay"])
        await w.start()
        try:
            await import_rows(w.db, parse_csv("address\nupstream@example.se\nfbl@example.no\n", settings),
                              datetime.now(timezone.utc), "t.csv")
            bodies = [{"type": "bounce", "address": "upstream@example.se", "status": "5.1.1"},
                      {"type": "complaint", "address": "fbl@example.no", "unit": "alumni"}]
            conn = await aio_pika.connect(RABBIT_URL)
            async with conn:
                ch = await conn.channel()
                for body in bodies:
                    for _ in range(2):             # delivered twice upstream: applied once
                        await ch.default_exchange.publish(
                            aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                            routing_key=settings.amqp.inbound_queue)

            async def three():
                return len(listener.received) >= 3

            await wait_for(three, timeout=30)
            await asyncio.sleep(1)                 # room for a wrong duplicate to arrive
        finally:
            await w.stop()
    keys = sorted(key for key, _ in listener.received)
    assert keys == ["preference.alumni.email", "suppression.complaint", "suppression.hard_bounce"]
    for _, update in listener.received:
        jsonschema.validate(update, SCHEMA)
        assert update["source"] in ("queue", "bounce")
