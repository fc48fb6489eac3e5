"""Regressions of the one-writer work (issue 20), on SQLite and PostgreSQL.

* An import re-subscribed people who had opted out of a channel of a unit: it wrote a
  newer `(unit, *) subscribed` row itself, beside handlers.state.apply, and published nothing.
* The preference page could not undo "Stop all contact": unticking it alone saved
  nothing, and after re-ticking a channel the page still showed "Stop all" ticked.
* The page listed every unit as receiving, also those the person was never on.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from handlers.state.apply import apply
from handlers.model import ALL, Action, ActionType, Decision, Kind, State
from handlers.state.plan import PreferenceRow, effective_state
from handlers.tokens import sign
from worker.ops.contacts import ImportError_, import_rows, parse_csv, show
from worker.store.models import Event, Outbox, Preference, ReviewItem
from worker.ops.review import ReviewError, resolve
from tests.conftest import make_settings
from tests.integration.test_links_http import KEYRING, add_contact, client_for, proof_of

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)


async def effective(database, contact_id: int, unit: str, channel: str) -> State:
    async with database.sessions() as s:
        rows = (await s.scalars(select(Preference).where(Preference.contact_id == contact_id))).all()
    view = {(p.unit, p.channel): PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at) for p in rows}
    return effective_state(view, unit, channel)


async def outbox(database) -> list[Outbox]:
    async with database.sessions() as s:
        return list((await s.scalars(select(Outbox).order_by(Outbox.contact_id, Outbox.sequence))).all())


@pytest.mark.parametrize("units, channels", [(("alumni",), ("email",)), (ALL, ("email",))],
                         ids=["alumni-email", "all-units-email"])
async def test_a_reimport_never_resubscribes_an_opt_out(database, units, channels):
    settings = make_settings()
    await import_rows(database, parse_csv("address,units\nanna@example.se,events\n", settings), T0, "a.csv",
                      operator="ops")
    optout = Decision(item_id="optout-1", kind=Kind.OPTOUT, reason="avregistrera mig",
                      actions=(Action(ActionType.UNSUBSCRIBE, "anna@example.se", units=units, channels=channels),))
    await apply(optout, database.unit_of_work(), T0 + timedelta(hours=1))
    view = await show(database.sessions, settings, "anna@example.se")
    assert view is not None and view.contact_id is not None
    result = await import_rows(database, parse_csv("address,name,units\nanna@example.se,Anna,alumni\n", settings),
                               T0 + timedelta(days=1), "b.csv", operator="ops")
    assert await effective(database, view.contact_id, "alumni", "email") is State.UNSUBSCRIBED
    assert await effective(database, view.contact_id, "alumni", "sms") is State.SUBSCRIBED
    assert result.kept_opt_out == 1 and result.updated == 1
    after = await show(database.sessions, settings, "anna@example.se")
    assert after is not None and after.units == ["events", "alumni"] and after.name == "Anna"
    # What the import changed is published, in sequence after the opt-out; and it names its operator.
    rows = await outbox(database)
    assert [r.routing_key for r in rows][-1] == "membership.alumni"
    assert [r.sequence for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1].payload["state"] == "joined" and rows[-1].payload["operator"] == "ops"
    async with database.sessions() as s:
        events = (await s.scalars(select(Event).where(Event.kind == "import"))).all()
    assert len(events) == 2 and all(e.evidence["operator"] == "ops" for e in events)


async def test_an_import_that_changes_nothing_publishes_nothing_and_a_conflict_writes_nothing(database):
    settings = make_settings()
    csv = "address,units,recipient_id\nbo@example.se,alumni,R1\ncai@example.se,events,R2\n"
    first = await import_rows(database, parse_csv(csv, settings), T0, "a.csv")
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    published = len(await outbox(database))
    again = await import_rows(database, parse_csv(csv, settings), T0 + timedelta(hours=1), "a.csv")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert len(await outbox(database)) == published
    with pytest.raises(ImportError_, match="R1"):
        await import_rows(database, parse_csv("address,units,recipient_id\ncai@example.se,alumni,R1\n", settings),
                          T0 + timedelta(hours=2), "c.csv")
    view = await show(database.sessions, settings, "cai@example.se")
    assert view is not None and view.units == ["events"]          # rolled back whole
    assert len(await outbox(database)) == published


async def test_a_review_item_is_settled_once_in_the_same_transaction_as_its_opt_out(database):
    bad = Decision(item_id="unclear-1", kind=Kind.REPLY, review=True, reason="unclear request",
                   evidence={"from": "dag@example.se"})
    await apply(bad, database.unit_of_work(), T0)
    async with database.sessions() as s:
        item = (await s.scalars(select(ReviewItem))).one()
    applied = await resolve(database, item.id, "optout", T0 + timedelta(hours=1), operator="eva")
    assert applied.updates == 1
    async with database.sessions() as s:
        item = (await s.scalars(select(ReviewItem))).one()
        event = await s.get(Event, applied.event_id)
    assert item.resolution == "optout" and item.resolution_event_id == applied.event_id
    assert event.evidence["operator"] == "eva"
    with pytest.raises(ReviewError, match="already resolved"):
        await resolve(database, item.id, "ignore", T0 + timedelta(hours=2), operator="eva")


def boxes_of(page: str) -> list[str]:
    return re.findall(r'name="box" value="([^"]+)"', page)


def ticked(page: str) -> set[str]:
    return set(re.findall(r'name="want" value="([^"]+)" checked>', page))


def stop_all_ticked(page: str) -> bool:
    return 'aria-describedby="stop_all_help" checked>' in page


async def save(client, token: str, page: str, want, stop_all: bool):
    data = [("proof", proof_of(page)), ("lang", "en"),
            ("stop_all_shown", "1" if stop_all_ticked(page) else "0"),
            *[("box", b) for b in boxes_of(page)], *[("want", w) for w in want]]
    if stop_all:
        data.append(("stop_all", "1"))
    r = await client.post(f"/u/{token}", data=data, allow_redirects=False)
    assert r.status == 303
    return await (await client.get(r.headers["Location"])).text()


async def test_stop_all_can_be_undone_from_the_page(database):
    cid = await add_contact(database, "eir@example.se", units=("alumni", "events"))
    token = sign(cid, "alumni", "email", KEYRING)
    async with client_for(database) as client:
        page = await (await client.get(f"/u/{token}?lang=en&saved=1")).text()
        assert boxes_of(page) and ticked(page) == set(boxes_of(page)) and not stop_all_ticked(page)
        # An earlier choice: no alumni SMS.
        page = await save(client, token, page, ticked(page) - {"alumni:sms"}, stop_all=False)
        page = await save(client, token, page, ticked(page), stop_all=True)
        assert stop_all_ticked(page)
        assert await effective(database, cid, "events", "email") is State.UNSUBSCRIBED
        # Untick "Stop all" alone: the earlier choices come back.
        page = await save(client, token, page, ticked(page), stop_all=False)
        assert not stop_all_ticked(page)
        assert await effective(database, cid, "events", "email") is State.SUBSCRIBED
        assert await effective(database, cid, "alumni", "sms") is State.UNSUBSCRIBED
        assert ticked(page) == set(boxes_of(page)) - {"alumni:sms"}
        # Stop all again, then untick it and re-tick a channel: the page no longer shows it ticked.
        page = await save(client, token, page, ticked(page), stop_all=True)
        page = await save(client, token, page, ticked(page) | {"alumni:sms"}, stop_all=False)
        assert not stop_all_ticked(page) and "alumni:sms" in ticked(page)
        assert await effective(database, cid, "alumni", "sms") is State.SUBSCRIBED
        # A save of the page as shown changes nothing.
        before = len(await outbox(database))
        await save(client, token, page, ticked(page), stop_all=False)
        assert len(await outbox(database)) == before


async def test_the_page_shows_only_the_units_a_person_is_on_and_names_the_others(database):
    cid = await add_contact(database, "fia@example.se", units=("events",))
    token = sign(cid, "events", "email", KEYRING)
    async with client_for(database) as client:
        page = await (await client.get(f"/u/{token}?lang=en")).text()
    assert {b.partition(":")[0] for b in boxes_of(page)} == {"events"}
    note = re.search(r'<p class="note" id="not_on">([^<]+)</p>', page)
    assert note is not None and "not on the mailing lists of" in note.group(1)
    assert "Alumni" in note.group(1)
