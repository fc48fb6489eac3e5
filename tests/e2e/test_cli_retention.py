"""`unsubd retention run [--dry-run]` as a real subprocess: the counts it prints first are
what is due, a dry run changes nothing, and the counts it prints after are what it did."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

import config
from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from tests.conftest import EXAMPLE_TOML
from tests.e2e.test_cli import unsubd
from worker.app import prepare_database
from worker.ops.contacts import import_rows, parse_csv
from worker.store import migrate
from worker.store.db import Database
from worker.store.models import Address, Contact, Event, InboundItem

YEARS_AGO = datetime.now(timezone.utc) - timedelta(days=6 * 365)


async def fill(path: Path, old: int, recent: int) -> None:
    url = f"sqlite+aiosqlite:///{path}"
    settings = config.load({"UNSUBD_DATABASE_URL": url}, EXAMPLE_TOML)
    db = Database.connect(url)
    try:
        await migrate.upgrade(db.engine)
        await prepare_database(settings, db)
        rows = "".join(f"old{i}@example.se,research-news\n" for i in range(old))
        await import_rows(db, parse_csv("address,units\n" + rows, settings), YEARS_AGO, "old.csv", operator="t")
        rows = "".join(f"new{i}@example.se,research-news\n" for i in range(recent))
        await import_rows(db, parse_csv("address,units\n" + rows, settings), datetime.now(timezone.utc),
                          "new.csv", operator="t")
        await apply(Decision(item_id="old-optout", kind=Kind.OPTOUT, source="reply", verified=True, reason="stop",
                             actions=(Action(ActionType.UNSUBSCRIBE, "old0@example.se"),)),
                    db.unit_of_work(), YEARS_AGO + timedelta(days=1))
        async with db.transaction() as s:
            for i, at in enumerate((YEARS_AGO, YEARS_AGO, datetime.now(timezone.utc))):
                s.add(InboundItem(id=f"item-{i}", raw=b"Subject: x\r\n\r\nstop", mail_from="x@example.net",
                                  rcpt_tos=[], source="smtp", received_at=at, status="done", attempts=1,
                                  available_at=at, updated_at=at))
    finally:
        await db.close()


async def state(path: Path) -> dict[str, int]:
    db = Database.connect(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.sessions() as s:
            return {"addresses": await s.scalar(select(func.count()).select_from(Address)),
                    "erased": await s.scalar(select(func.count()).select_from(Contact)
                                             .where(Contact.origin == "erased")),
                    "blank": await s.scalar(select(func.count()).select_from(InboundItem)
                                            .where(func.length(InboundItem.raw) == 0)),
                    "events": await s.scalar(select(func.count()).select_from(Event))}
    finally:
        await db.close()


def counts(block: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (\w+)\s+(\d+)\s", block, re.MULTILINE)}


def test_retention_run_prints_what_is_due_then_what_it_did(tmp_path):
    db = tmp_path / "u.db"
    asyncio.run(fill(db, old=7, recent=3))
    before = asyncio.run(state(db))
    dry = unsubd("retention", "run", "--dry-run", db=db)
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "done" not in dry.stdout
    due = counts(dry.stdout)
    assert due["contacts"] == 7 and due["raw_mail"] == 2 and due["evidence"] == 2
    assert asyncio.run(state(db)) == before

    done = unsubd("retention", "run", db=db)
    assert done.returncode == 0, done.stderr
    first, _, after = done.stdout.partition("done (")
    assert counts(first) == due                      # printed before anything was written
    did = counts(after)
    now = asyncio.run(state(db))
    assert did["contacts"] == now["erased"] - before["erased"] == 7
    assert now["addresses"] == before["addresses"] - 7 == 3
    assert did["raw_mail"] == now["blank"] - before["blank"] == 2
    batches = int(re.search(r"done \((\d+) batches", done.stdout).group(1))
    assert now["events"] == before["events"] + batches          # one event per batch
    assert "@example.se" not in done.stdout + done.stderr       # no address is printed

    again = unsubd("retention", "run", "--json", db=db)
    assert again.returncode == 0 and json.loads(again.stdout)["batches"] == 0


def test_bad_retention_settings_are_refused_with_a_clear_message(tmp_path):
    db = tmp_path / "u.db"
    result = unsubd("retention", "run", db=db, UNSUBD_RETENTION__CONTACTS__NON_ALUMNI="five years")
    assert result.returncode == 2
    assert "retention.contacts.non_alumni" in result.stderr and "not a period" in result.stderr
    assert not db.exists() or asyncio.run(state(db))["events"] == 0
