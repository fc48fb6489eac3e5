"""Rectification (issue 23, item 4): `change-address` keeps the person's consent and history
under the new address and leaves the dead address's suppression and soft bounces behind,
on SQLite and PostgreSQL (the `database` fixture runs each test on both)."""

from __future__ import annotations

from datetime import timedelta

import jsonschema
import pytest
from sqlalchemy import func, select

from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from handlers.tokens import sign
from worker.ops.contacts import import_rows, parse_csv, show
from worker.ops.rights import AddressConflict, change_address, erase, export
from worker.store.models import Address, Event, Outbox, Preference, SoftBounce, Suppression, Tombstone
from tests.integration.test_links_http import KEYRING, ONE_CLICK, client_for
from tests.integration.test_rights import (ADDRESS, OTHER, SCHEMA, T0, a_person_with_history, dump, found_in,
                                           settings_for)

NEW = "anna.svensson@nytt.example.se"


def rows_of(values, table: str):
    return [(t, c, v) for t, c, v in values if t == table]


async def test_the_contact_keeps_consent_and_history_and_the_suppression_stays_with_the_old_address(database):
    contact_id = await a_person_with_history(database)
    settings = settings_for(database)
    before = await show(database.sessions, settings, ADDRESS)
    assert before.suppressions and before.suppressions[0]["reason"] == "hard_bounce"    # the old mailbox is dead
    async with database.sessions() as s:
        seq_before = (await s.scalar(select(func.max(Outbox.sequence)).where(Outbox.contact_id == contact_id)))

    result = await change_address(database, settings, ADDRESS.upper(), f" {NEW} ", "new address, ticket 7",
                                  T0 + timedelta(days=1), operator="kim")
    assert result is not None and (result.old, result.new) == (ADDRESS, NEW)
    assert result.counts["changed"] == 1 and result.counts["suppression_left_with_old"] == 1

    after = await show(database.sessions, settings, NEW)
    assert after is not None and after.contact_id == contact_id and after.addresses == [NEW]
    assert after.name == "Anna Svensson" and set(after.units) == {"alumni", "events"}
    assert after.preferences == before.preferences and after.rows == before.rows     # consent as it was
    assert after.suppressions == []                                                     # NEW is not suppressed
    assert {e["id"] for e in before.events} <= {e["id"] for e in after.events}          # history kept
    # The old address is no one's now, and it stays suppressed: mail to it is still refused.
    old = await show(database.sessions, settings, ADDRESS)
    assert old is not None and old.contact_id is None and old.suppressions[0]["reason"] == "hard_bounce"

    # The proof: no row of any table suppresses or counts a bounce for the new address.
    values = await dump(database)
    assert found_in(rows_of(values, "suppression"), NEW) == []
    assert found_in(rows_of(values, "soft_bounce"), NEW) == []
    assert found_in(rows_of(values, "suppression"), ADDRESS)            # the old one's is still there
    async with database.sessions() as s:
        sup = (await s.scalars(select(Suppression).where(Suppression.address == ADDRESS))).one()
        assert sup.active and sup.contact_id is None                    # about the mailbox, not the person
        assert (await s.scalar(select(func.count()).select_from(Preference)
                               .where(Preference.contact_id == contact_id))) == len(before.rows)
        upd = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.address_changed"))).one()
        event = await s.get(Event, upd.event_id)
    payload = upd.payload
    assert (payload["old_address"], payload["new_address"], payload["address"]) == (ADDRESS, NEW, NEW)
    assert payload["state"] == "address_changed" and payload["operator"] == "kim"
    assert payload["contact_id"] == contact_id and payload["sequence"] == seq_before + 1
    jsonschema.validate(payload, SCHEMA)
    assert event.evidence["operator"] == "kim" and event.evidence["operator_reason"] == "new address, ticket 7"
    assert event.source == "rectification" and event.kind == "admin"


async def test_a_soft_bounce_count_stays_with_the_old_address(database):
    settings = settings_for(database)
    await import_rows(database, parse_csv(f"address,units\n{OTHER},alumni\n", settings), T0, "c.csv", operator="ops")

    async def soft(address: str, ref: str, at) -> None:
        act = Action(ActionType.SOFT_BOUNCE, address, status="4.2.2", reason="mailbox_full", hard=False, ref=ref)
        await apply(Decision(item_id=f"soft-{address}-{ref}", kind=Kind.BOUNCE, actions=(act,), reason="full"),
                    database.unit_of_work(), at)

    await soft(OTHER, "m1", T0 + timedelta(hours=1))
    await soft(OTHER, "m2", T0 + timedelta(hours=2))           # two of three: one more would suppress
    result = await change_address(database, settings, OTHER, "bertil@nytt.example.se", "moved",
                                  T0 + timedelta(hours=3), operator="kim")
    assert result is not None and result.counts["soft_bounces_left_with_old"] == 2
    new = "bertil@nytt.example.se"
    await soft(new, "m3", T0 + timedelta(hours=4))
    assert (await show(database.sessions, settings, new)).suppressions == []     # 1, not 3: nothing carried
    await soft(new, "m4", T0 + timedelta(hours=5))
    assert (await show(database.sessions, settings, new)).suppressions == []
    await soft(new, "m5", T0 + timedelta(hours=6))                               # its own third
    assert [s["reason"] for s in (await show(database.sessions, settings, new)).suppressions] == \
        ["soft_bounce_threshold"]
    async with database.sessions() as s:
        old_rows = (await s.scalars(select(SoftBounce).where(SoftBounce.address == OTHER))).all()
    assert len(old_rows) == 2


async def test_an_old_token_still_acts_on_the_contact_at_its_new_address(database):
    settings = settings_for(database)
    await import_rows(database, parse_csv(f"address,units\n{ADDRESS},alumni;events\n", settings), T0, "c.csv",
                      operator="ops")
    contact_id = (await show(database.sessions, settings, ADDRESS)).contact_id
    token = sign(contact_id, "alumni", "email", KEYRING)          # in mail sent before the correction
    assert await change_address(database, settings, ADDRESS, NEW, "typo fixed", T0 + timedelta(hours=1),
                                operator="kim") is not None
    async with client_for(database) as c:
        page = await c.get(f"/u/{token}")
        assert page.status == 200 and NEW in await page.text()
        r = await c.post(f"/u/{token}", data=ONE_CLICK)
        assert r.status == 200
    view = await show(database.sessions, settings, NEW)
    assert view.contact_id == contact_id
    assert {"unit": "alumni", "channel": "email", "state": "unsubscribed"} in view.preferences
    async with database.sessions() as s:
        upd = (await s.scalars(select(Outbox).where(Outbox.routing_key == "preference.alumni.email"))).one()
    assert upd.payload["address"] == NEW and upd.contact_id == contact_id
    # A click from the queue names the contact too, and reaches it at its new address.
    click = Decision(item_id="click-old", kind=Kind.CLICK, source="queue", verified=True, reason="old link",
                     actions=(Action(ActionType.UNSUBSCRIBE, "", units=("events",), channels=("email",),
                                     contact_id=contact_id),))
    await apply(click, database.unit_of_work(), T0 + timedelta(hours=2))
    view = await show(database.sessions, settings, NEW)
    assert {"unit": "events", "channel": "email", "state": "unsubscribed"} in view.preferences
    old = await show(database.sessions, settings, ADDRESS)                   # its history names it, no more
    assert old.contact_id is None and old.preferences == [] and old.suppressions == []


async def test_refusals_change_nothing(database):
    await a_person_with_history(database)
    settings = settings_for(database)
    later = T0 + timedelta(days=1)
    # An erased address cannot be given to anyone by hand.
    await erase(database, settings, OTHER, "asked by mail", later, operator="kim")
    before = await dump(database)
    for old, new, reason in [("not an address", NEW, "x"), (ADDRESS, "nope@", "x"), (ADDRESS, NEW, "  "),
                             (ADDRESS, ADDRESS.upper(), "x")]:
        with pytest.raises(ValueError) as info:
            await change_address(database, settings, old, new, reason, later, operator="kim")
        assert not isinstance(info.value, AddressConflict)
    assert await change_address(database, settings, "nobody@example.se", NEW, "x", later, operator="kim") is None
    await import_rows(database, parse_csv(f"address,units\ncarl@example.se,alumni\n", settings), T0, "c.csv",
                      operator="ops")
    before = await dump(database)
    with pytest.raises(AddressConflict) as taken:
        await change_address(database, settings, ADDRESS, "Carl@example.se", "x", later, operator="kim")
    assert taken.value.kind == "taken" and "another contact" in str(taken.value)
    with pytest.raises(AddressConflict) as erased:
        await change_address(database, settings, ADDRESS, OTHER, "x", later, operator="kim")
    assert erased.value.kind == "erased" and "erased at the person's request" in str(erased.value)
    assert await dump(database) == before
    # Done once, the same correction finds no contact at the old address the second time.
    assert await change_address(database, settings, ADDRESS, NEW, "x", later, operator="kim") is not None
    assert await change_address(database, settings, ADDRESS, NEW, "x", later, operator="kim") is None


async def test_erasure_after_a_change_forgets_the_old_address_too(database):
    """The proof of erasure, after a rectification: neither address is left in any table."""
    contact_id = await a_person_with_history(database)
    settings = settings_for(database)
    await change_address(database, settings, ADDRESS, NEW, f"was {ADDRESS}", T0 + timedelta(days=1), operator="kim")
    data = await export(database, settings, NEW)
    assert data["former_addresses"] == [ADDRESS] and data["suppression"][0]["address"] == ADDRESS
    result = await erase(database, settings, NEW, "forget me", T0 + timedelta(days=2), operator="kim")
    assert result is not None and result.addresses == 2
    values = await dump(database)
    assert found_in(values, NEW) == [] and found_in(values, ADDRESS) == []
    assert found_in(values, OTHER)                                   # the other person is untouched
    async with database.sessions() as s:
        assert (await s.scalar(select(func.count()).select_from(Tombstone))) == 2
        assert (await s.scalar(select(func.count()).select_from(Address).where(Address.contact_id == contact_id))) == 0
        moved = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.address_changed"))).one()
    assert moved.payload["old_address"] is None and moved.payload["new_address"] is None
    jsonschema.validate(moved.payload, SCHEMA)
    # Both stay blocked: an import of the old address brings back its "no" and its suppression.
    await import_rows(database, parse_csv(f"address,units\n{ADDRESS},alumni\n", settings), T0 + timedelta(days=3),
                      "again.csv", operator="ops")
    view = await show(database.sessions, settings, ADDRESS)
    assert {p["state"] for p in view.preferences} == {"unsubscribed"} and view.suppressions


def test_the_cli_refuses_with_clear_exit_codes_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import sqlite3

    from tests.conftest import EXAMPLE_TOML
    from worker.cli.main import main

    db = tmp_path / "u.db"
    monkeypatch.setenv("UNSUBD_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    cfg = ["--config", str(EXAMPLE_TOML)]
    (tmp_path / "c.csv").write_text(f"address,name,units\n{ADDRESS},Anna Svensson,alumni\ncarl@example.se,,alumni\n"
                                    f"{OTHER},,alumni\n")
    assert main(["contacts", "import", str(tmp_path / "c.csv"), *cfg]) == 0
    assert main(["contacts", "erase", OTHER, "--reason", "asked", *cfg]) == 0

    def counts() -> tuple[int, ...]:
        with sqlite3.connect(db) as conn:
            return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                         for t in ("event", "outbox", "address", "suppression", "contact"))

    written = counts()
    capsys.readouterr()
    for args, code, words in [
        (("not an address", NEW, "--reason", "x"), 2, "old address is not an email address"),
        ((ADDRESS, "nope@", "--reason", "x"), 2, "new address is not an email address"),
        ((ADDRESS, NEW, "--reason", "  "), 2, "needs a reason"),
        ((ADDRESS, ADDRESS.upper(), "--reason", "x"), 2, "the same address"),
        (("nobody@example.se", NEW, "--reason", "x"), 1, "no contact has the old address"),
        ((ADDRESS, "Carl@example.se", "--reason", "x"), 2, "belongs to another contact"),
        ((ADDRESS, OTHER, "--reason", "x"), 2, "erased at the person's request"),
    ]:
        assert main(["contacts", "change-address", *args, *cfg]) == code, args
        assert words in capsys.readouterr().err, args
    with pytest.raises(SystemExit) as no_reason:
        main(["contacts", "change-address", ADDRESS, NEW, *cfg])
    assert no_reason.value.code == 2
    assert counts() == written
    assert main(["contacts", "change-address", ADDRESS, NEW, "--reason", "typo", "--operator", "kim", *cfg]) == 0
    assert "address changed" in capsys.readouterr().out
    assert counts()[:2] == (written[0] + 1, written[1] + 1)          # one event, one update


async def test_two_contacts_moved_to_one_address_at_once_one_wins(database):
    """Whether the second transaction reads the address as taken, or finds it taken by the
    unique index when it writes (PostgreSQL, both read before either commits), it is refused."""
    import asyncio

    settings = settings_for(database)
    await import_rows(database, parse_csv(f"address,units\n{ADDRESS},alumni\n{OTHER},alumni\n", settings), T0,
                      "c.csv", operator="ops")
    results = await asyncio.gather(*(change_address(database, settings, old, NEW, "both at once", T0, operator=op)
                                     for old, op in ((ADDRESS, "kim"), (OTHER, "lee"))), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], AddressConflict) and lost[0].kind == "taken"
    view = await show(database.sessions, settings, NEW)
    assert view.contact_id is not None and view.addresses == [NEW]
    async with database.sessions() as s:
        assert (await s.scalar(select(func.count()).select_from(Outbox)
                               .where(Outbox.routing_key == "contact.address_changed"))) == 1


async def test_postgresql_refuses_the_second_of_two_racing_changes_by_the_unique_address(pg_url, monkeypatch):
    """Both transactions read the new address as free before either writes (held at a barrier
    just before `record`); the unique index refuses the second, which answers "taken"."""
    import asyncio

    from worker.store.db import Database
    from worker.store.unit_of_work import SqlUnitOfWork

    database = Database.connect(pg_url)
    try:
        settings = settings_for(database)
        await import_rows(database, parse_csv(f"address,units\n{ADDRESS},alumni\n{OTHER},alumni\n", settings), T0,
                          "c.csv", operator="ops")
        barrier = asyncio.Barrier(2)
        record = SqlUnitOfWork.record

        async def record_after_both_read(self, decision, event_id, changes, now):
            await barrier.wait()
            await record(self, decision, event_id, changes, now)

        monkeypatch.setattr(SqlUnitOfWork, "record", record_after_both_read)
        results = await asyncio.wait_for(asyncio.gather(
            *(change_address(database, settings, old, NEW, "race", T0, operator="kim") for old in (ADDRESS, OTHER)),
            return_exceptions=True), 60)
        monkeypatch.undo()
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], AddressConflict) and lost[0].kind == "taken" and "just now" in str(lost[0])
        assert (await show(database.sessions, settings, NEW)).addresses == [NEW]
        async with database.sessions() as s:                             # the loser wrote nothing
            assert (await s.scalar(select(func.count()).select_from(Event)
                                   .where(Event.source == "rectification"))) == 1
    finally:
        await database.close()
