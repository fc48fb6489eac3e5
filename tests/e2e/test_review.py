"""The review queue: items opened by unclear decisions and rights requests, settled as events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from handlers.state.apply import apply
from handlers.model import Decision, Kind
from worker.store.models import Event, Outbox, Preference, ReviewItem
from worker.ops.review import ReviewError, list_open, resolve
from tests.conftest import EXAMPLE_TOML, REPO

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def unclear(item_id: str, sender: str = "assistant@example.se") -> Decision:
    return Decision(item_id=item_id, kind=Kind.OPTOUT, review=True, reason="writes for someone else",
                    evidence={"from": sender})


async def test_unclear_decisions_and_rights_requests_open_review_items(database):
    await apply(unclear("r1"), database.unit_of_work(), T0)
    rights = Decision(item_id="r2", kind=Kind.REPLY, review=True, reason="asks for a copy of their data",
                      evidence={"from": "data@example.no", "rights_request": {"type": "access", "deadline": "2026-03-31"}})
    await apply(rights, database.unit_of_work(), T0 + timedelta(minutes=1))
    await apply(Decision(item_id="r3", kind=Kind.REPLY, reason="thanks"), database.unit_of_work(), T0)
    items = await list_open(database)
    assert [(i["kind"], i["address"]) for i in items] == [
        ("rights_request", "data@example.no"), ("decision", "assistant@example.se"), ("decision", "data@example.no")]
    assert items[0]["due_at"].startswith("2026-03-31")


async def test_resolving_as_optout_applies_it_as_an_event_of_its_own(database):
    await apply(unclear("r1"), database.unit_of_work(), T0)
    (item,) = await list_open(database)
    applied = await resolve(database, item["id"], "optout", T0 + timedelta(hours=1), units=("alumni",),
                            channels=("email", "sms"), note="confirmed by phone")
    assert applied.updates == 2
    async with database.sessions() as s:
        prefs = (await s.scalars(select(Preference).order_by(Preference.channel))).all()
        outs = (await s.scalars(select(Outbox))).all()
        ev = (await s.scalars(select(Event).where(Event.id == applied.event_id))).one()
        row = await s.get(ReviewItem, item["id"])
    assert [(p.unit, p.channel, p.state, p.source) for p in prefs] == [
        ("alumni", "email", "unsubscribed", "review"), ("alumni", "sms", "unsubscribed", "review")]
    assert {o.payload["address"] for o in outs} == {"assistant@example.se"}
    assert ev.kind == "admin" and "confirmed by phone" in ev.reason
    assert row.resolution == "optout" and row.resolution_event_id == applied.event_id
    assert await list_open(database) == []
    with pytest.raises(ReviewError, match="already resolved"):
        await resolve(database, item["id"], "ignore", T0 + timedelta(hours=2))


async def test_resolving_as_ignore_changes_nothing_but_is_recorded(database):
    await apply(unclear("r1"), database.unit_of_work(), T0)
    (item,) = await list_open(database)
    applied = await resolve(database, item["id"], "ignore", T0 + timedelta(hours=1))
    assert applied.updates == 0 and applied.event_id
    with pytest.raises(LookupError):
        await resolve(database, 999_999, "ignore", T0)
    with pytest.raises(ReviewError):
        await resolve(database, item["id"], "delete-everything", T0)


async def test_an_item_without_an_address_needs_one_given(database):
    await apply(Decision(item_id="r9", kind=Kind.UNKNOWN, review=True, reason="unreadable"),
                database.unit_of_work(), T0)
    (item,) = await list_open(database)
    with pytest.raises(ReviewError, match="--address"):
        await resolve(database, item["id"], "optout", T0)
    applied = await resolve(database, item["id"], "optout", T0, address="Real.Person@Example.se")
    assert applied.updates == 1


def unsubd(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNSUBD_CONFIG": str(EXAMPLE_TOML), "UNSUBD_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "worker.cli.main", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_review_list_and_resolve_from_the_command_line(tmp_path: Path):
    import asyncio

    from worker.app import prepare_database
    from worker.store.db import Database
    from tests.conftest import make_settings

    db_path = tmp_path / "u.db"

    async def seed() -> None:
        settings = make_settings(f"sqlite+aiosqlite:///{db_path}")
        db = Database.connect(settings.database_url)
        await prepare_database(settings, db)
        await apply(unclear("c1", "helper@example.se"), db.unit_of_work(), T0)
        await db.close()

    asyncio.run(seed())
    listed = unsubd("review", "list", "--json", db=db_path)
    assert listed.returncode == 0, listed.stderr
    (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert item["address"] == "helper@example.se"
    human = unsubd("review", "list", db=db_path)
    assert "helper@example.se" in human.stdout and "writes for someone else" in human.stdout
    bad = unsubd("review", "resolve", str(item["id"]), "--as", "optout", "--units", "nonsense", db=db_path)
    assert bad.returncode == 2 and "--units" in bad.stderr
    ok = unsubd("review", "resolve", str(item["id"]), "--as", "optout", "--channels", "all", db=db_path)
    assert ok.returncode == 0 and "1 updates" in ok.stdout
    assert unsubd("review", "list", db=db_path).stdout.strip() == "nothing to review"
    assert unsubd("review", "resolve", "12345", "--as", "ignore", db=db_path).returncode == 1
