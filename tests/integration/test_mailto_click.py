"""Signed tokens outside HTTP: the List-Unsubscribe mailto address and link clicks on the queue."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import ALL, Action, ActionType, Decision, Inbound, Kind, item_key
from handlers.tokens import keyring_from_settings, sign
from worker.app import Worker
from worker.ops.contacts import import_rows, parse_csv
from worker.store.models import Outbox, Preference
from tests.conftest import make_settings
from tests.support.messages import plain
from tests.integration.test_smtp import send, wait_for

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
KEYS = json.dumps({"k1": "a-test-signing-key-that-is-long-enough-0123"})


@pytest.fixture(scope="module")
def settings():
    return make_settings(UNSUBD_TOKENS__KEYS=KEYS)


def token(settings, contact_id=7, unit="alumni", channel="email") -> str:
    return sign(contact_id, unit, channel, keyring_from_settings(settings))


def mailto(tok: str, sender: str = "someone.else@example.se") -> Inbound:
    raw = plain(subject="unsubscribe", body="", sender=sender)
    return Inbound.from_smtp(raw, sender, [f"unsubscribe+{tok}@mail.example.org"], NOW)


def test_a_valid_mailto_token_acts_on_exactly_its_contact_and_scope(settings):
    d = classify(mailto(token(settings, 7, "research-news", "email")), Context.from_settings(settings), NOW)
    assert d.kind is Kind.OPTOUT and d.verified and d.source == "mailto"
    (a,) = d.actions
    assert (a.type, a.contact_id, a.units, a.channels) == (ActionType.UNSUBSCRIBE, 7, ("research-news",), ("email",))
    assert a.address == ""                      # the contact's address is found when applied, not from From
    # The token is a bearer credential: the event keeps its claims, never the token.
    assert token(settings, 7, "research-news", "email") not in json.dumps(d.evidence)
    assert d.evidence["token_claims"]["contact_id"] == 7


def test_an_all_units_token_means_all(settings):
    (a,) = classify(mailto(token(settings, 7, "*", "*")), Context.from_settings(settings), NOW).actions
    assert a.units == ALL and a.channels == ALL


def test_a_tampered_mailto_token_falls_back_to_the_sender_and_is_not_verified(settings):
    tok = token(settings)
    bad = tok[:-2] + ("A" if tok[-2] != "A" else "B") + tok[-1]
    d = classify(mailto(bad, sender="per@example.se"), Context.from_settings(settings), NOW)
    assert not d.verified and [(a.address, a.contact_id) for a in d.actions] == [("per@example.se", None)]


def click(body: dict | bytes) -> Inbound:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Inbound(id=item_key("click", raw), raw=raw, mail_from=None, rcpt_tos=(), received_at=NOW, source="queue")


def test_a_queue_click_has_the_effect_of_one_click(settings):
    d = classify(click({"type": "click", "token": token(settings, 9, "events", "sms"), "at": "2026-03-01T11:59:00Z"}),
                 Context.from_settings(settings), NOW)
    assert d.kind is Kind.CLICK and d.verified and d.source == "queue"
    (a,) = d.actions
    assert (a.contact_id, a.units, a.channels) == (9, ("events",), ("sms",))
    assert d.evidence["at"] == "2026-03-01T11:59:00Z"


@pytest.mark.parametrize("body, review", [
    ({"type": "click", "token": "not-a-token"}, False),
    ({"type": "click"}, False),
    ({"type": "teleport"}, True),
    (b"[1, 2, 3]", True),
    (b"\xff\xfe not json", True),
    (b"{" * 100_000, True),
])
def test_queue_items_that_are_not_valid_clicks_change_nothing(settings, body, review):
    d = classify(click(body), Context.from_settings(settings), NOW)
    assert d.actions == () and d.review is review and d.reason


async def test_apply_resolves_a_contact_named_by_a_token(database):
    settings = make_settings()
    await import_rows(database, parse_csv("address\nanna@example.se\n", settings), NOW, "t.csv")
    async with database.sessions() as s:
        from worker.store.models import Address
        contact_id = (await s.scalars(select(Address.contact_id))).one()
    act = Action(ActionType.UNSUBSCRIBE, "", units=("alumni",), channels=("email",), contact_id=contact_id)
    applied = await apply(Decision(item_id="m1", kind=Kind.OPTOUT, actions=(act,), reason="t", source="mailto"),
                          database.unit_of_work(), NOW)
    assert applied.updates == 1
    async with database.sessions() as s:
        out = (await s.scalars(select(Outbox))).one()
    assert out.payload["address"] == "anna@example.se" and out.payload["source"] == "mailto"
    gone = Action(ActionType.UNSUBSCRIBE, "", units=ALL, channels=ALL, contact_id=contact_id + 999)
    nothing = await apply(Decision(item_id="m2", kind=Kind.OPTOUT, actions=(gone,), reason="t"),
                          database.unit_of_work(), NOW)
    assert nothing.updates == 0 and not nothing.duplicate


async def test_mailto_over_smtp_unsubscribes_the_token_contact_not_the_sender(sqlite_url):
    w = Worker(make_settings(sqlite_url))          # embedded: the key file beside the database
    await w.start()
    try:
        await import_rows(w.db, parse_csv("address\nolle@example.se\n", w.settings), NOW, "t.csv")
        tok = sign(1, "alumni", "email", keyring_from_settings(w.settings))
        raw = plain(subject="unsubscribe", body="", sender="forwarded-by@example.no")
        assert await asyncio.to_thread(send, w.smtp_address[1], raw, [f"unsubscribe+{tok}@mail.example.org"]) == {}

        async def pref():
            async with w.db.sessions() as s:
                return (await s.scalars(select(Preference))).all()

        prefs = await wait_for(lambda: _unsubscribed(pref))
        assert [(p.unit, p.channel, p.source) for p in prefs] == [("alumni", "email", "mailto")]
        async with w.db.sessions() as s:
            assert (await s.scalars(select(Outbox.payload))).one()["address"] == "olle@example.se"
    finally:
        await w.stop()


async def _unsubscribed(fetch):
    rows = await fetch()
    return [p for p in rows if p.state == "unsubscribed"]
