"""Rights requests as work with a deadline (issue 23, item 6), on SQLite and PostgreSQL: from the
reply's text to the rights item and its due date, `unsubd rights list|fulfil`, and the
counts in /metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from handlers.model import Decision, Kind, State
from handlers.state.apply import apply
from worker.cli.main import main
from worker.ops.contacts import import_rows, parse_csv, show
from worker.ops.requests import RequestError, counts, fulfil, list_open
from worker.ops.rights import export
from worker.store.models import Event, Preference, ReviewItem
from tests.conftest import EXAMPLE_TOML
from tests.integration.test_links_http import KEYRING, KEYS_ENV
from tests.integration.test_rights import receive, settings_for

UTC = timezone.utc
ANNA = "anna.svensson@example.se"
JAN31 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)


def reply(body: str, sender: str = ANNA, subject: str = "Re: Alumninytt", when: datetime = JAN31) -> bytes:
    return (f"From: Anna Svensson <{sender}>\r\nTo: alumni@mail.example.org\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(when)}\r\nMessage-ID: <{abs(hash((body, sender)))}@example.se>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()


async def imported(database, *addresses: str) -> None:
    settings = settings_for(database)
    database.tombstone_keys = KEYRING
    rows = "".join(f"{a},Person {i},alumni;events\n" for i, a in enumerate(addresses))
    await import_rows(database, parse_csv("address,name,units\n" + rows, settings), JAN31 - timedelta(days=30),
                      "alumni.csv", operator="ops")


# --- from the reply's text to the due date --------------------------------------------------

async def test_swedish_erasure_received_31_january_is_due_28_february(database):
    await imported(database, ANNA)
    decision = await receive(database, reply("Radera mina uppgifter, tack."), JAN31)
    # The reader acts as before: an erasure request is an opt-out of everything.
    assert decision.kind is Kind.OPTOUT and not decision.review
    async with database.sessions() as s:
        prefs = {(p.unit, p.channel): p.state for p in (await s.scalars(select(Preference))).all()}
    assert prefs == {("*", "*"): State.UNSUBSCRIBED.value}
    (item,) = await list_open(database, JAN31)
    assert (item.type, item.address) == ("erasure", ANNA)
    assert item.due_at.date().isoformat() == "2026-02-28"          # one calendar month, not 30 days
    assert item.days_left == 28 and not item.overdue
    async with database.sessions() as s:
        row = await s.get(ReviewItem, item.id)
    assert row.kind == "rights_request" and row.reason.startswith("rights request (erasure), due 2026-02-28")


@pytest.mark.parametrize("body,kind,received,due", [
    ("Jag vill ha ett registerutdrag, tack.", "access", datetime(2026, 3, 31, 9, tzinfo=UTC), "2026-04-30"),
    ("Bitte korrigieren Sie meinen Nachnamen, er ist falsch geschrieben.", "rectification",
     datetime(2026, 12, 31, 23, tzinfo=UTC), "2027-01-31"),
    ("Jeg frabeder mig al kontakt fra jeres side.", "objection", datetime(2028, 1, 30, 8, tzinfo=UTC), "2028-02-29"),
    ("Poistakaa kaikki tietoni rekisteristänne.", "erasure", datetime(2026, 5, 15, 8, tzinfo=UTC), "2026-06-15"),
])
async def test_each_type_opens_a_rights_item_due_one_month_after_receipt(database, body, kind, received, due):
    await imported(database, ANNA)
    await receive(database, reply(body, when=received), received)
    (item,) = await list_open(database, received)
    assert item.type == kind and item.address == ANNA
    assert item.due_at.date().isoformat() == due


async def test_list_is_due_date_first_with_days_left_and_overdue(database):
    await imported(database, ANNA, "bo@example.se", "cy@example.se")
    await receive(database, reply("Jag vill ha ett registerutdrag.", "cy@example.se"), JAN31 + timedelta(days=10))
    await receive(database, reply("Radera mina uppgifter, tack."), JAN31)
    await receive(database, reply("Please correct my name, it is misspelt.", "bo@example.se"),
                  JAN31 + timedelta(days=5))
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)        # ANNA's was due 28 Feb, bo's 5 March, cy's 10 March
    items = await list_open(database, now)
    assert [(i.type, i.address, i.days_left, i.overdue) for i in items] == [
        ("erasure", ANNA, -3, True), ("rectification", "bo@example.se", 2, False),
        ("access", "cy@example.se", 7, False)]
    overdue = await list_open(database, now, overdue=True)
    assert [i.address for i in overdue] == [ANNA]
    assert await counts(database, now) == (3, 1)
    # On the due day itself it is not overdue yet: 0 days left.
    (first, *_) = await list_open(database, datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    assert first.days_left == 0 and not first.overdue
    assert await counts(database, datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == (3, 0)


# --- fulfilling ---------------------------------------------------------------------------

async def _closed(database, item_id: int) -> tuple[ReviewItem, Event | None]:
    async with database.sessions() as s:
        row = await s.get(ReviewItem, item_id)
        event = await s.get(Event, row.resolution_event_id) if row.resolution_event_id else None
    return row, event


async def test_fulfilling_access_delivers_the_export_then_closes_as_an_event(database):
    await imported(database, ANNA)
    await receive(database, reply("Jag vill ha ett registerutdrag, tack."), JAN31)
    (item,) = await list_open(database, JAN31)
    got: list[dict] = []
    done = await fulfil(database, settings_for(database), item.id, JAN31 + timedelta(days=3), operator="kim",
                        note="sent by post", deliver=got.append)
    (sent,) = got
    assert sent["export"]["address"] == ANNA and sent["export"]["contact"]["name"] == "Person 0"
    assert "What we hold about" in sent["summary"] and sent["request"]["type"] == "access"
    row, event = await _closed(database, item.id)
    assert row.resolution == "fulfilled" and done.resolution == "fulfilled"
    assert event is not None and event.kind == "admin" and event.source == "rights"
    assert event.evidence["operator"] == "kim" and "sent by post" in event.reason
    assert event.id != item.event_id                      # the closing is an event of its own
    assert await list_open(database, JAN31) == []
    with pytest.raises(RequestError, match="already fulfilled"):
        await fulfil(database, settings_for(database), item.id, JAN31, operator="kim", deliver=got.append)
    assert len(got) == 1


async def test_fulfilling_erasure_runs_the_erasure_and_closes_the_item(database):
    await imported(database, ANNA, "bo@example.se")
    await receive(database, reply("Radera mina uppgifter, tack."), JAN31)
    (item,) = await list_open(database, JAN31)
    done = await fulfil(database, settings_for(database), item.id, JAN31 + timedelta(days=1), operator="kim",
                        note="ticket 12")
    data = await export(database, settings_for(database), ANNA)
    assert data is not None and data["contact"] is None and data["erased"] is not None   # only the tombstone
    row, event = await _closed(database, item.id)
    assert row.resolved_at is not None and row.address is None and done.resolution == row.resolution
    assert event is not None and event.source == "erasure" and "rights request" in event.reason
    assert ANNA not in event.reason and "ticket 12" in event.reason
    assert await list_open(database, JAN31) == []
    assert (await export(database, settings_for(database), "bo@example.se"))["contact"] is not None


async def test_erasure_waits_for_an_open_access_request_of_the_same_address(database):
    await imported(database, ANNA)
    await receive(database, reply("What data do you hold about me? Please also delete my data afterwards."), JAN31)
    access, erasure = await list_open(database, JAN31)
    assert (access.type, erasure.type) == ("access", "erasure")
    with pytest.raises(RequestError, match="access request first"):
        await fulfil(database, settings_for(database), erasure.id, JAN31, operator="kim")
    assert (await export(database, settings_for(database), ANNA))["contact"] is not None   # nothing erased
    await fulfil(database, settings_for(database), access.id, JAN31, operator="kim", deliver=lambda d: None)
    await fulfil(database, settings_for(database), erasure.id, JAN31, operator="kim")
    assert await list_open(database, JAN31) == []


async def test_fulfilling_objection_puts_the_opt_out_of_everything_in_place(database):
    await imported(database, ANNA)
    # An objection held for review (so nothing was acted on yet), its rights item open.
    held = Decision(item_id="obj-1", kind=Kind.OPTOUT, review=True, reason="objection, unclear sender",
                    evidence={"from": ANNA, "objection": True,
                              "rights_request": {"type": "objection", "types": ["objection"],
                                                 "deadline": "2026-02-28"}})
    await apply(held, database.unit_of_work(), JAN31)
    (item,) = await list_open(database, JAN31)
    assert item.type == "objection"
    done = await fulfil(database, settings_for(database), item.id, JAN31, operator="kim")
    assert done.done == "opted out of every unit and channel"
    async with database.sessions() as s:
        prefs = {(p.unit, p.channel): p.state for p in (await s.scalars(select(Preference))).all()}
    assert prefs == {("*", "*"): "unsubscribed"}
    # Already in place: closing writes no preference again.
    await receive(database, reply("Jeg frabeder mig al kontakt fra jeres side."), JAN31 + timedelta(days=1))
    (again,) = await list_open(database, JAN31)
    done = await fulfil(database, settings_for(database), again.id, JAN31 + timedelta(days=2), operator="kim")
    assert done.done.startswith("the opt-out of every unit and channel was already in effect")
    assert done.applied[-1].updates == 0


async def test_fulfilling_rectification_needs_the_new_address(database):
    await imported(database, ANNA)
    await receive(database, reply("Min adress har ändrats till anna@nytt.example.se."), JAN31)
    (item,) = await list_open(database, JAN31)
    assert item.type == "rectification"
    with pytest.raises(RequestError, match="--new-address"):
        await fulfil(database, settings_for(database), item.id, JAN31, operator="kim")
    done = await fulfil(database, settings_for(database), item.id, JAN31, operator="kim",
                        new_address="anna@nytt.example.se")
    row, event = await _closed(database, item.id)
    assert row.resolution == "fulfilled" and event is not None
    from worker.ops import rights as rights_ops
    if hasattr(rights_ops, "change_address"):
        assert done.done == "address corrected"
        assert (await show(database.sessions, settings_for(database), "anna@nytt.example.se")) is not None
    else:
        assert "by hand" in done.done


async def test_bad_ids_and_items_that_are_not_rights_requests(database):
    with pytest.raises(LookupError):
        await fulfil(database, settings_for(database), 424242, JAN31, operator="kim")
    await apply(Decision(item_id="u1", kind=Kind.OPTOUT, review=True, reason="unclear", evidence={"from": ANNA}),
                database.unit_of_work(), JAN31)
    async with database.sessions() as s:
        (row,) = (await s.scalars(select(ReviewItem))).all()
    with pytest.raises(RequestError, match="not a rights request"):
        await fulfil(database, settings_for(database), row.id, JAN31, operator="kim")
    async with database.sessions() as s:
        assert (await s.get(ReviewItem, row.id)).resolved_at is None


# --- the command line ---------------------------------------------------------------------

def _cli(monkeypatch, database, *args: str) -> int:
    url = database.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("UNSUBD_DATABASE_URL", url)
    monkeypatch.setenv("UNSUBD_CONFIG", str(EXAMPLE_TOML))
    for key, value in KEYS_ENV.items():
        monkeypatch.setenv(key, value)
    return main(list(args))


async def test_rights_list_and_fulfil_from_the_command_line(database, monkeypatch, capsys, tmp_path: Path):
    await imported(database, ANNA, "bo@example.se")
    today = datetime.now(UTC)
    await receive(database, reply("Radera mina uppgifter, tack.", when=today - timedelta(days=40)),
                  today - timedelta(days=40))
    await receive(database, reply("Jag vill ha ett registerutdrag.", "bo@example.se", when=today), today)
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "list", "--json")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and [(x["type"], x["address"], x["overdue"]) for x in lines] == [
        ("erasure", ANNA, True), ("access", "bo@example.se", False)]
    assert lines[0]["days_left"] < 0 and lines[1]["days_left"] >= 28
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "list", "--overdue")
    out = capsys.readouterr().out
    assert code == 0 and ANNA in out and "OVERDUE" in out and "bo@example.se" not in out
    access_id, erasure_id = lines[1]["id"], lines[0]["id"]
    target = tmp_path / "export.json"
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "fulfil", str(access_id),
                                   "--out", str(target), "--note", "mailed")
    assert code == 0, capsys.readouterr().err
    written = json.loads(target.read_text())
    assert written["export"]["address"] == "bo@example.se" and "What we hold" in written["summary"]
    assert "closed as fulfilled" in capsys.readouterr().out
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "fulfil", str(access_id))
    assert code == 2 and "already fulfilled" in capsys.readouterr().err
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "fulfil", "999999")
    assert code == 1 and "no rights item" in capsys.readouterr().err
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "fulfil", str(erasure_id))
    assert code == 0 and "closed as erased" in capsys.readouterr().out
    code = await asyncio.to_thread(_cli, monkeypatch, database, "rights", "list")
    assert code == 0 and capsys.readouterr().out.strip() == "no open rights requests"


# --- /metrics -----------------------------------------------------------------------------

async def test_open_and_overdue_rights_requests_in_metrics(database):
    from worker.app import Worker

    await imported(database, ANNA, "bo@example.se")
    now = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    await receive(database, reply("Radera mina uppgifter, tack."), JAN31)                      # due 28 Feb: overdue
    await receive(database, reply("Jag vill ha ett registerutdrag.", "bo@example.se"), now)   # due 10 April
    settings = settings_for(database)
    worker = Worker(settings, roles=("http",), clock=lambda: now)
    await worker.start()
    try:
        host, port = worker.http_address

        def fetch() -> str:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
                return resp.read().decode()

        body = await asyncio.to_thread(fetch)
    finally:
        await worker.stop()
    values = {parts[0]: float(parts[1]) for parts in (line.split() for line in body.splitlines())
              if len(parts) == 2 and not parts[0].startswith("#")}
    assert values["unsubd_rights_requests_open"] == 2
    assert values["unsubd_rights_requests_overdue"] == 1
