"""Unsubscribe that deletes (issue 23, item 7), on SQLite and PostgreSQL: a unit with
`on_unsubscribe = "erase"` erases the address when its email is opted out of, in the same
transaction as the opt-out, and the tombstone keeps it unsubscribed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from handlers.tokens import sign
from worker.app import prepare_database
from worker.ingress.http import build_app
from worker.ops.contacts import import_rows, parse_csv, show
from worker.ops.review import list_open as review_list, resolve
from worker.ops.rights import export
from worker.outbox.relay import FeedPublisher, Relay
from worker.store.models import Contact, Membership, Tombstone
from tests.conftest import make_settings
from tests.integration.test_links_http import KEYRING, KEYS_ENV, ONE_CLICK, no_metrics
from tests.integration.test_rights import dump, found_in, receive

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
ERASE_ENV = {**KEYS_ENV, "UNSUBD_UNITS__research-news__ON_UNSUBSCRIBE": "erase"}
ANNA = "anna.newsletter@example.se"       # on Research News only
BO = "bo.both@example.se"                 # on Research News and Alumni


def settings_for(database, **env):
    url = database.engine.url.render_as_string(hide_password=False)
    return make_settings(url, **{**ERASE_ENV, **env})


async def ready(database, **env):
    """The database as `unsubd serve` prepares it (the units' on_unsubscribe read from the settings)."""
    settings = settings_for(database, **env)
    await prepare_database(settings, database, lambda: T0)
    database.tombstone_keys = KEYRING
    return settings


async def import_people(database, settings, when: datetime = T0) -> None:
    csv = f"address,name,units\n{ANNA},Anna N,research-news\n{BO},Bo B,alumni;research-news\n"
    await import_rows(database, parse_csv(csv, settings), when, "lists.csv", operator="ops")


async def contact_id(database, settings, address: str) -> int | None:
    view = await show(database.sessions, settings, address)
    return view.contact_id if view is not None else None


async def one_click(database, settings, cid: int, unit: str, channel: str = "email") -> int:
    app = build_app(settings, database.sessions, no_metrics, db=database, keyring=KEYRING, clock=lambda: T0)
    async with TestClient(TestServer(app)) as client:
        r = await client.post(f"/u/{sign(cid, unit, channel, KEYRING)}", data=ONE_CLICK)
        return r.status


async def published(database, settings) -> list[dict]:
    """The update stream as consumers see it: relayed, then read from GET /v1/updates."""
    await Relay(settings, database, FeedPublisher(), lambda: T0).drain_once()
    app = build_app(settings, database.sessions, no_metrics, db=database, keyring=KEYRING)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/v1/updates?after=0&limit=1000")).json()
    return body["updates"]


async def test_one_click_on_an_erasing_unit_erases_and_the_tombstone_keeps_it_unsubscribed(database):
    settings = await ready(database)
    await import_people(database, settings)
    cid = await contact_id(database, settings, ANNA)
    assert await one_click(database, settings, cid, "research-news") == 200
    # The proof of erasure: the address is in no table, in any common encoding.
    assert found_in(await dump(database), ANNA) == []
    data = await export(database, settings, ANNA)
    assert data["contact"] is None and data["erased"] is not None
    assert ["*", "*"] in data["erased"]["optouts"] and ["research-news", "email"] in data["erased"]["optouts"]
    async with database.sessions() as s:
        assert (await s.get(Contact, cid)).origin == "erased"
        assert (await s.scalars(select(Membership).where(Membership.contact_id == cid))).all() == []
    # The update stream: the opt-out (with the hash, not the address), then contact.erased.
    stream = [u for u in await published(database, settings) if u["contact_id"] == cid]
    assert [u["routing_key"] for u in stream][-2:] == ["preference.research-news.email", "contact.erased"]
    erased = stream[-1]
    assert erased["address"] is None and len(erased["address_hash"]) == 64 and erased["state"] == "erased"
    assert stream[-2]["address"] is None and stream[-2]["address_hash"] == erased["address_hash"]
    assert all(ANNA not in str(u) for u in stream)
    # A re-import brings the address back unsubscribed: the tombstone's opt-outs are written again.
    await import_people(database, settings, T0 + timedelta(days=1))
    view = await show(database.sessions, settings, ANNA)
    assert view is not None and view.contact_id != cid
    states = {(e["unit"], e["channel"]): e["state"] for e in view.preferences}
    assert states[("research-news", "email")] == "unsubscribed"
    assert states[("alumni", "email")] == "unsubscribed"           # an erased person is not mailed again


async def test_a_contact_on_another_units_list_keeps_its_address_and_leaves_only_that_list(database):
    settings = await ready(database)
    await import_people(database, settings)
    cid = await contact_id(database, settings, BO)
    assert await one_click(database, settings, cid, "research-news") == 200
    assert await contact_id(database, settings, BO) == cid                  # not erased
    async with database.sessions() as s:
        units = set((await s.scalars(select(Membership.unit).where(Membership.contact_id == cid))).all())
        assert (await s.scalars(select(Tombstone))).all() == []
    assert units == {"alumni"}                                               # research-news membership gone
    data = await export(database, settings, BO)
    assert [(p["unit"], p["channel"], p["state"]) for p in data["preference"]] == [
        ("research-news", "email", "unsubscribed")]


async def test_a_keep_unit_and_another_channel_erase_nothing(database):
    settings = await ready(database)
    await import_people(database, settings)
    cid = await contact_id(database, settings, ANNA)
    assert await one_click(database, settings, cid, "research-news", "sms") == 200     # not email
    assert await one_click(database, settings, cid, "alumni") == 200                   # a keep unit
    assert await contact_id(database, settings, ANNA) == cid
    async with database.sessions() as s:
        assert (await s.scalars(select(Tombstone))).all() == []
    # With the unit set to keep, the same one-click erases nothing either.
    keep = await ready(database, **{"UNSUBD_UNITS__research-news__ON_UNSUBSCRIBE": "keep"})
    assert await one_click(database, keep, cid, "research-news") == 200
    assert await contact_id(database, keep, ANNA) == cid


async def test_an_emailed_request_from_an_unknown_address_leaves_only_a_tombstone(database):
    await ready(database)
    stranger = "stranger@example.net"
    raw = (f"From: Stranger <{stranger}>\r\nTo: forskning@mail.example.org\r\nSubject: Avregistrera\r\n"
           "Message-ID: <s1@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "Avregistrera mig från Forskningsnytt, tack.\r\n").encode()
    decision = await receive(database, raw, T0, rcpt="forskning@mail.example.org")
    assert decision.kind is Kind.OPTOUT and decision.actions[0].units == ("research-news",)
    assert found_in(await dump(database), stranger) == []                 # nor in the received message
    data = await export(database, settings_for(database), stranger)
    assert data["erased"] is not None and ["research-news", "email"] in data["erased"]["optouts"]
    async with database.sessions() as s:
        assert (await s.scalars(select(Contact))).all() == []          # no contact was made for it


async def test_a_review_settled_as_an_opt_out_of_the_unit_erases(database):
    settings = await ready(database)
    await import_people(database, settings)
    held = Decision(item_id="h1", kind=Kind.OPTOUT, review=True, reason="unclear request",
                    actions=(Action(ActionType.UNSUBSCRIBE, ANNA, units=("research-news",), channels=("email",)),),
                    evidence={"from": ANNA})
    await apply(held, database.unit_of_work(), T0)
    (item,) = await review_list(database)
    applied = await resolve(database, item["id"], "optout", T0 + timedelta(hours=1), units=("research-news",),
                            channels=("email",), operator="kim")
    assert applied.counts.get("erased_on_unsubscribe") == 1
    assert found_in(await dump(database), ANNA) == []


async def test_an_emailed_opt_out_from_a_known_contact_erases_the_message_too(database):
    settings = await ready(database)
    await import_people(database, settings)
    cid = await contact_id(database, settings, ANNA)
    raw = (f"From: Anna N <{ANNA}>\r\nTo: forskning@mail.example.org\r\nSubject: Re: Forskningsnytt\r\n"
           "Message-ID: <a1@example.se>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           f"Avregistrera mig från Forskningsnytt, tack.\r\n\r\nAnna N\r\n{ANNA}\r\n").encode()
    decision = await receive(database, raw, T0, rcpt="forskning@mail.example.org")
    assert decision.kind is Kind.OPTOUT and not decision.review
    # The event's own evidence (From, subject) and the received message are erased with the contact.
    assert found_in(await dump(database), ANNA) == []
    async with database.sessions() as s:
        assert (await s.get(Contact, cid)).origin == "erased"
    stream = [u for u in await published(database, settings) if u["contact_id"] == cid]
    assert stream[-1]["routing_key"] == "contact.erased"


async def test_an_erasing_unit_without_keys_refuses_to_start(pg_url):
    """On PostgreSQL without tokens.keys nothing could be erased: serve says so instead of
    quietly keeping the addresses the unit promises to delete."""
    from config import ConfigError
    from worker.store.db import Database

    db = Database.connect(pg_url)
    try:
        settings = make_settings(pg_url, **{"UNSUBD_UNITS__research-news__ON_UNSUBSCRIBE": "erase"})
        with pytest.raises(ConfigError, match="research-news.*tokens.keys"):
            await prepare_database(settings, db)
        await prepare_database(make_settings(pg_url), db)        # no erasing unit: starts as before
    finally:
        await db.close()
