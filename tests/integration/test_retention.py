"""Retention (issue 23, item 5) on SQLite and PostgreSQL (the `database` fixture runs each test
on both): contacts past their period are erased and their "no" still blocks; what is recent
or kept stays; a dry run changes nothing; raw mail, evidence, events and review items go
by their own periods; and on PostgreSQL only one run at a time does anything."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from handlers.events.retention import MARKER
from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from worker.ops import retention
from worker.ops.contacts import import_rows, parse_csv, show
from worker.store.db import Database
from worker.store.models import (Address, Contact, Event, EventAddress, InboundItem, Membership, Outbox, Preference,
                                 ReviewItem, Tombstone)
from handlers.tokens import Keyring
from worker.store.models import Base
from tests.conftest import make_settings

SECRET = "retention-test-secret-0123456789abcdef"
KEYS_ENV = {"UNSUBD_TOKENS__KEYS": f'{{"k1": "{SECRET}"}}'}
KEYRING = Keyring({"k1": SECRET.encode()}, "k1")

NOW = datetime(2032, 6, 1, 12, 0, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(days=6 * 365)              # beyond the default five years
LAST_YEAR = NOW - timedelta(days=365)
OLD, RECENT, ALUM = "old.person@example.se", "recent.person@example.se", "alum@example.se"


async def dump(database: Database) -> list[tuple[str, str, object]]:
    """Every value of every table, in a stable order."""
    out = []
    async with database.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = (await conn.execute(table.select().order_by(*table.primary_key.columns))).mappings()
            out += [(table.name, column, value) for row in rows for column, value in row.items()]
    return out


def found_in(values: list[tuple[str, str, object]], address: str) -> list[str]:
    """The tables and columns where the address occurs (any case)."""
    hits = []
    for table, column, value in values:
        blob = (value.decode("latin-1") if isinstance(value, bytes)
                else json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
        if address.lower() in blob.lower():
            hits.append(f"{table}.{column}")
    return hits


def settings_for(database: Database, **env: str):
    url = database.engine.url.render_as_string(hide_password=False)
    return make_settings(url, **KEYS_ENV, **env)


def optout(address: str, item: str) -> Decision:
    return Decision(item_id=item, kind=Kind.OPTOUT, source="reply", verified=True, reason=f"opt-out by {address}",
                    actions=(Action(ActionType.UNSUBSCRIBE, address, units=("research-news",), channels=("email",)),),
                    evidence={"text": f"please stop, {address}"})


async def people(database: Database) -> None:
    """Three contacts imported long ago: one who never came back, one who opted out last year,
    one on the alumni unit (kept for ever by default). The first opted out long ago."""
    settings = settings_for(database)
    database.tombstone_keys = KEYRING
    csv = (f"address,name,units\n{OLD},Olle Old,research-news\n{RECENT},Rita Recent,research-news\n"
           f"{ALUM},Alva Alum,alumni;research-news\n")
    await import_rows(database, parse_csv(csv, settings), LONG_AGO, "old.csv", operator="ops")
    await apply(optout(OLD, "old-optout"), database.unit_of_work(), LONG_AGO + timedelta(days=1))
    await apply(optout(RECENT, "recent-optout"), database.unit_of_work(), LAST_YEAR)


async def table_counts(database: Database) -> dict[str, int]:
    out = {}
    async with database.sessions() as s:
        for model in (Contact, Address, Preference, Membership, Event, EventAddress, Outbox, Tombstone, ReviewItem):
            out[model.__tablename__] = await s.scalar(select(func.count()).select_from(model))
    return out


async def test_a_contact_past_its_period_is_erased_and_its_no_still_blocks(database):
    await people(database)
    settings = settings_for(database)
    # Due: the contact, and the free text of the two events from six years ago (evidence: 5y).
    assert await retention.due(database, settings, NOW) == {"contacts": 1, "review_items": 0, "events": 0,
                                                             "evidence": 2, "raw_mail": 0}
    heard = []
    result = await retention.run(database, settings, NOW, on_due=heard.append)
    assert heard == [result.due] and result.due["contacts"] == 1
    assert result.done == result.due and result.batches == 2 and result.skipped is None
    assert found_in(await dump(database), OLD) == []                       # gone from every table
    assert found_in(await dump(database), RECENT) and found_in(await dump(database), ALUM)
    async with database.sessions() as s:
        assert set((await s.scalars(select(Address.address))).all()) == {RECENT, ALUM}
        erased = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.erased"))).one()
        event = await s.get(Event, erased.event_id)
        tomb = (await s.scalars(select(Tombstone))).one()
    assert erased.payload["reason"] == "retention" and erased.payload["operator"] == "retention"
    assert event.kind == "admin" and event.source == "retention" and event.evidence["operator"] == "retention"
    assert ["research-news", "email"] in tomb.optouts and ["*", "*"] in tomb.optouts
    # The pre-send lookup finds the tombstone, and a later import brings back the "no".
    view = await show(database.sessions, settings, OLD)
    assert view is not None and view.erased and {p["state"] for p in view.preferences} == {"unsubscribed"}
    back = await import_rows(database, parse_csv(f"address,units\n{OLD},research-news\n", settings),
                             NOW + timedelta(days=1), "again.csv", operator="ops")
    assert back.created == 1 and back.kept_opt_out == 1
    view = await show(database.sessions, settings, OLD)
    assert view is not None and {p["state"] for p in view.preferences} == {"unsubscribed"}
    # Nothing more is due: a second run writes nothing.
    again = await retention.run(database, settings, NOW + timedelta(days=1))
    assert again.batches == 0 and again.done["contacts"] == 0


async def test_the_kinds_follow_their_own_periods(database):
    await people(database)
    # Alumni kept two years: the alumnus (imported six years ago, nothing since) goes too.
    settings = settings_for(database, UNSUBD_RETENTION__CONTACTS__ALUMNI="2y")
    result = await retention.run(database, settings, NOW)
    assert result.done["contacts"] == 2
    async with database.sessions() as s:
        assert (await s.scalars(select(Address.address))).all() == [RECENT]
    # A recent interaction counts: with non-alumni kept one month, the one who opted out last year goes.
    settings = settings_for(database, UNSUBD_RETENTION__CONTACTS__NON_ALUMNI="1m")
    assert (await retention.run(database, settings, NOW)).done["contacts"] == 1
    async with database.sessions() as s:
        assert (await s.scalars(select(Address.address))).all() == []


async def test_keep_keeps_everything(database):
    await people(database)
    await received(database, "old-item", NOW - timedelta(days=3000))
    settings = settings_for(database, **{f"UNSUBD_RETENTION__{k}": "keep" for k in (
        "RAW_MAIL", "EVIDENCE", "EVENTS", "REVIEW_ITEMS", "CONTACTS__NON_ALUMNI", "CONTACTS__ALUMNI")})
    before = await dump(database)
    result = await retention.run(database, settings, NOW + timedelta(days=100 * 365))
    assert set(result.due.values()) == {0} and result.batches == 0
    assert await dump(database) == before


async def test_a_dry_run_counts_and_changes_nothing(database):
    await people(database)
    await received(database, "old-item", NOW - timedelta(days=400))
    settings = settings_for(database, UNSUBD_RETENTION__EVENTS="1y")
    before = await dump(database)
    result = await retention.run(database, settings, NOW, dry_run=True)
    assert result.dry_run and result.due["contacts"] == 1 and result.due["raw_mail"] == 1
    assert result.due["events"] >= 2 and result.done == {} and result.batches == 0
    assert await dump(database) == before


async def received(database: Database, item_id: str, at: datetime, status: str = "done") -> None:
    raw = f"From: someone@example.net\r\nSubject: hello {item_id}\r\n\r\nstop mailing me\r\n".encode()
    async with database.transaction() as s:
        s.add(InboundItem(id=item_id, raw=raw, mail_from="someone@example.net", rcpt_tos=["reply@mail.example.org"],
                          source="smtp", received_at=at, status=status, attempts=1, available_at=at,
                          updated_at=at, last_error=None))


async def test_raw_mail_older_than_its_period_is_blanked_and_newer_kept(database):
    await received(database, "seven-months", NOW - timedelta(days=214))
    await received(database, "one-month", NOW - timedelta(days=30))
    await received(database, "waiting", NOW - timedelta(days=400), status="pending")   # not handled yet
    settings = settings_for(database)                      # raw_mail: 6m by default
    result = await retention.run(database, settings, NOW)
    assert result.due["raw_mail"] == 1 and result.done["raw_mail"] == 1
    async with database.sessions() as s:
        items = {i.id: i for i in (await s.scalars(select(InboundItem))).all()}
        batch = (await s.scalars(select(Event).where(Event.source == "retention"))).one()
    assert items["seven-months"].raw == b"" and items["seven-months"].mail_from is None
    assert items["one-month"].raw.startswith(b"From:") and items["waiting"].raw.startswith(b"From:")
    assert batch.evidence["retention"]["blank"] == ["seven-months"] and batch.evidence["operator"] == "retention"


async def test_events_evidence_and_review_items_by_their_periods(database):
    await people(database)
    settings = settings_for(database)
    # An auto-reply long ago: an event nothing refers to. A review item settled three years ago,
    # and one still open.
    ignored = Decision(item_id="auto-1", kind=Kind.AUTOREPLY, reason="out of office", actions=(),
                       evidence={"subject": "Out of office until May"})
    await apply(ignored, database.unit_of_work(), LONG_AGO)
    held = Decision(item_id="held-1", kind=Kind.OPTOUT, review=True, reason=f"unclear request from {RECENT}",
                    actions=(Action(ActionType.UNSUBSCRIBE, RECENT),), evidence={"text": "stop?"})
    await apply(held, database.unit_of_work(), NOW - timedelta(days=4 * 365))
    await apply(Decision(item_id="held-2", kind=Kind.OPTOUT, review=True, reason="another", evidence={},
                         actions=(Action(ActionType.UNSUBSCRIBE, ALUM),)), database.unit_of_work(), LAST_YEAR)
    async with database.transaction() as s:
        first = (await s.scalars(select(ReviewItem).order_by(ReviewItem.id))).first()
        first.resolved_at, first.resolution = NOW - timedelta(days=3 * 365), "ignore"
    settings = settings_for(database, UNSUBD_RETENTION__EVENTS="5y", UNSUBD_RETENTION__EVIDENCE="3y",
                            UNSUBD_RETENTION__CONTACTS__NON_ALUMNI="keep")
    result = await retention.run(database, settings, NOW)
    assert result.done["review_items"] == 1 and result.due["review_items"] == 1
    async with database.sessions() as s:
        events = {e.item_id: e for e in (await s.scalars(select(Event))).all()}
        reviews = (await s.scalars(select(ReviewItem))).all()
    assert "auto-1" not in events                                   # old, nothing refers to it: deleted
    # Old but the record of opt-outs and memberships still in effect: kept, emptied.
    for kept in ("old-optout",):
        assert events[kept].reason == MARKER and events[kept].evidence["removed"] == "retention"
        assert events[kept].actions                                 # what was done stays
    assert result.detail.get("event.delete") == 1 and result.done["events"] >= 2
    # evidence 3y: the review's event from four years ago is emptied; last year's opt-out is not.
    assert events["held-1"].reason == MARKER and events["recent-optout"].reason != MARKER
    assert [r.resolution for r in reviews] == [None]                # the open one stays
    # What the due counts said is what was done.
    assert result.done == {k: result.due[k] for k in result.done}


@pytest.mark.postgres
async def test_on_postgres_one_run_at_a_time(pg_url):
    a, b = Database.connect(pg_url), Database.connect(pg_url)
    try:
        await people(a)
        settings = make_settings(pg_url, **KEYS_ENV, UNSUBD_RETENTION__RAW_MAIL="1d",
                                 UNSUBD_RETENTION__BATCH="1")
        for n in range(3):
            await received(a, f"item-{n}", NOW - timedelta(days=10))
        # Another process holds the lock: this run skips and says so, and writes nothing.
        async with a.engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": retention.LOCK_KEY})
            before = await dump(a)
            skipped = await retention.run(b, settings, NOW)
            assert skipped.skipped and "another process" in skipped.skipped and skipped.batches == 0
            assert await dump(a) == before
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": retention.LOCK_KEY})
        # Two runs at once: the first holds the lock while it works (held after its first
        # batch until the second has tried), the second skips.
        in_first, second_done = asyncio.Event(), asyncio.Event()

        async def pause(name: str, done: int) -> None:
            in_first.set()
            await asyncio.wait_for(second_done.wait(), timeout=30)

        first = asyncio.create_task(retention.run(a, settings, NOW, progress=pause))
        await asyncio.wait_for(in_first.wait(), timeout=30)
        second = await retention.run(b, settings, NOW)
        second_done.set()
        first_result = await first
        assert second.skipped and second.batches == 0
        assert first_result.skipped is None and first_result.done["contacts"] == 1
        assert first_result.done["raw_mail"] == 3 and first_result.done == first_result.due
        assert first_result.batches == sum(first_result.due.values())        # batches of one
        # The lock is free again: a later run goes ahead (and finds nothing left to do).
        later = await retention.run(b, settings, NOW)
        assert later.skipped is None and later.batches == 0
    finally:
        await a.close()
        await b.close()


async def test_serve_runs_retention_on_its_schedule(database):
    """The consumer role's daily task, on a short interval and a clock in the future."""
    from worker.app import Worker
    from worker.pipeline.pool import ClassifyPool
    from tests.support.pool_fns import act

    await people(database)
    url = database.engine.url.render_as_string(hide_password=False)
    settings = make_settings(url, **KEYS_ENV, UNSUBD_RETENTION__INTERVAL="0.2", UNSUBD_PARSE__WORKERS="1")
    worker = Worker(settings, roles=["consumer"], clock=lambda: NOW, pool=ClassifyPool(settings, classify_fn=act))
    await worker.start()
    try:
        for _ in range(100):
            if worker.retention_runs:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert worker.retention_runs and worker.retention_runs[0].done["contacts"] == 1
    async with database.sessions() as s:
        assert OLD not in set((await s.scalars(select(Address.address))).all())


def test_only_a_consumer_process_runs_retention_and_only_when_enabled():
    from worker.app import runs_retention

    assert runs_retention(make_settings(), ["consumer"]) and runs_retention(make_settings(), ["smtp", "consumer"])
    assert not runs_retention(make_settings(), ["smtp", "http", "relay"])
    assert not runs_retention(make_settings(UNSUBD_RETENTION__ENABLED="false"), ["consumer"])
    start = datetime(2032, 6, 1, 3, 29, tzinfo=timezone.utc)
    assert retention.next_run(make_settings().retention, start) == start + timedelta(minutes=1)
    assert retention.next_run(make_settings().retention, start + timedelta(minutes=1)) == start + timedelta(
        days=1, minutes=1)
    assert retention.next_run(make_settings(UNSUBD_RETENTION__INTERVAL="90").retention, start) == start + timedelta(
        seconds=90)


async def test_messages_from_an_address_are_found_by_index_not_by_a_scan(database):
    """Erasure and export look up received mail by lower(mail_from) (migration 0012);
    on 100,000 contacts a scan made each erasure take half a second (bench/rights_scale.py)."""
    async with database.engine.connect() as conn:
        if database.dialect == "sqlite":
            names = [row[1] for row in (await conn.exec_driver_sql("PRAGMA index_list(inbound_item)")).all()]
            # The shape of worker.store.erasure.ITEMS_OF and the export's lookup.
            plan = " ".join(str(row) for row in (await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM inbound_item WHERE status IN ('done', 'failed') "
                "AND (id IN ('a', 'b') OR lower(mail_from) IN ('x@example.se'))")).all())
            assert "ix_inbound_item_lower_mail_from" in plan, plan
        else:
            names = list((await conn.scalars(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'inbound_item'"))).all())
    assert "ix_inbound_item_lower_mail_from" in names
