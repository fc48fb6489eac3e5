"""Data-subject rights (issue 23): access, erasure with tombstones, and the proof of erasure,
on SQLite and PostgreSQL (the `database` fixture runs each test on both)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import quopri
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select, text

from handlers.classify import classify
from handlers.context import Context
from handlers.model import Action, ActionType, Decision, Inbound, Kind, State
from handlers.state.apply import apply
from worker.ops.contacts import import_rows, parse_csv, show
from worker.ops.rights import erase, export, personal_tables, summary
from worker.store.models import Base, Contact, InboundItem, Outbox, Tombstone
from tests.conftest import make_settings
from tests.integration.test_links_http import KEYRING, KEYS_ENV
from tests.support.messages import dsn

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
ADDRESS = "anna.svensson@example.se"
OTHER = "bertil@example.se"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "update.schema.json").read_text())


def settings_for(database):
    return make_settings(str(database.engine.url.render_as_string(hide_password=False)), **KEYS_ENV)


def reply(sender: str, body: str, encoding: str = "8bit") -> bytes:
    """An emailed opt-out from `sender`, its body in `encoding` (the address quoted in it too)."""
    text_body = f"{body}\n\nAnna Svensson\n{sender}\nhttps://example.se/?u={quote(sender, safe='')}\n"
    if encoding == "base64":
        payload = base64.encodebytes(text_body.encode()).decode()
    elif encoding == "quoted-printable":
        payload = quopri.encodestring(text_body.replace("@", "=").encode()).decode()  # '=' becomes =3D
        payload = quopri.encodestring(text_body.encode(), quotetabs=True).decode().replace("@", "=40")
    else:
        payload = text_body
    return (f"From: Anna Svensson <{sender.upper() if encoding == '8bit' else sender}>\r\n"
            f"To: alumni@mail.example.org\r\nSubject: avregistrera mig\r\n"
            f"Message-ID: <{encoding}.{len(body)}@example.se>\r\nMIME-Version: 1.0\r\n"
            + (f"Comments: =?utf-8?b?{base64.b64encode(sender.encode()).decode()}?=\r\n" if encoding == "base64" else "")
            + f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
            f"{payload}").encode()


async def receive(database, raw: bytes, now: datetime, rcpt: str = "alumni@mail.example.org") -> Decision:
    """As the consumer does: the item kept in inbound_item, classified, applied."""
    settings = settings_for(database)
    item = Inbound.from_smtp(raw, "sender@example.se", (rcpt,), now)
    async with database.transaction() as s:
        s.add(InboundItem(id=item.id, raw=raw, mail_from=item.mail_from, rcpt_tos=list(item.rcpt_tos),
                          source="smtp", received_at=now, status="done", attempts=1, available_at=now,
                          updated_at=now))
    decision = classify(item, Context.from_settings(settings), now)
    await apply(decision, database.unit_of_work(), now)
    return decision


async def a_person_with_history(database) -> int:
    settings = settings_for(database)
    database.tombstone_keys = KEYRING
    csv = f"address,name,units,recipient_id\n{ADDRESS},Anna Svensson,alumni;events,R-77\n{OTHER},Bertil,alumni,R-78\n"
    await import_rows(database, parse_csv(csv, settings), T0, "alumni.csv", operator="ops")
    await receive(database, reply(ADDRESS, "avregistrera mig, tack"), T0 + timedelta(hours=1))
    await receive(database, reply(ADDRESS, "please unsubscribe me", "base64"), T0 + timedelta(hours=2))
    await receive(database, reply(ADDRESS, "sluta skicka", "quoted-printable"), T0 + timedelta(hours=3))
    await receive(database, dsn(ADDRESS), T0 + timedelta(hours=4), rcpt="bounces@mail.example.org")
    # A review item naming the address (an unclear request held for a person).
    held = Decision(item_id="held-1", kind=Kind.OPTOUT, review=True, reason=f"unclear request from {ADDRESS}",
                    actions=(Action(ActionType.UNSUBSCRIBE, ADDRESS),), evidence={"from": ADDRESS, "text": "stop?"})
    await apply(held, database.unit_of_work(), T0 + timedelta(hours=5))
    view = await show(database.sessions, settings, ADDRESS)
    assert view is not None and view.contact_id is not None
    return view.contact_id


async def dump(database) -> list[tuple[str, str, object]]:
    """Every value of every table (bytes columns also as their decoded MIME parts)."""
    out = []
    async with database.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(table.select())).mappings():
                for column, value in row.items():
                    out.append((table.name, column, value))
                    if isinstance(value, bytes) and value:
                        msg = email.message_from_bytes(value, policy=email.policy.default)
                        for part in msg.walk():
                            if not part.is_multipart():
                                out.append((table.name, column + "(decoded)", part.get_payload(decode=True)))
    return out


def forms(address: str) -> list[str]:
    raw = address.encode()
    return [address.lower(), address.upper(), quote(address, safe=""), quote(address, safe="").lower(),
            quopri.encodestring(raw, quotetabs=True).decode().replace("@", "=40"),
            base64.b64encode(raw).decode().rstrip("=")]


def found_in(values, address: str) -> list[str]:
    """Where the address occurs: case-insensitively in every form but base64, which is exact."""
    b64 = forms(address)[-1]
    hits = []
    for table, column, value in values:
        if value is None:
            continue
        if isinstance(value, bytes):
            blob = value.decode("latin-1")
        elif isinstance(value, (dict, list)):
            blob = json.dumps(value, ensure_ascii=False)
        else:
            blob = str(value)
        hits += [f"{table}.{column}: {form}" for form in forms(address)[:-1] if form.lower() in blob.lower()]
        if b64 in blob:
            hits.append(f"{table}.{column}: base64")
    return hits


async def test_export_gives_everything_held_and_a_summary(database):
    await a_person_with_history(database)
    settings = settings_for(database)
    data = await export(database, settings, ADDRESS.upper())
    assert data is not None
    assert personal_tables() - {"unit", "tombstone", "address"} <= set(data) | {"contact"}
    assert data["contact"]["name"] == "Anna Svensson" and data["contact"]["recipient_id"] == "R-77"
    assert {m["unit"] for m in data["membership"]} == {"alumni", "events"}
    assert any(p["state"] == "unsubscribed" for p in data["preference"])
    assert data["preference_history"] and data["suppression"][0]["reason"] == "hard_bounce"
    assert len(data["inbound_item"]) == 4 and len(data["review_item"]) == 1
    assert any(e["evidence"] for e in data["event"]) and data["outbox"]
    assert OTHER not in json.dumps(data, default=str)        # nobody else's data
    text_ = summary(data)
    assert "alumni" in text_ and "Anna Svensson" in text_ and "4 received messages" in text_
    assert await export(database, settings, "nobody@example.se") is None
    with pytest.raises(ValueError):
        await export(database, settings, "not an address")


async def test_erasure_leaves_the_address_in_no_table_in_any_encoding(database):
    """The proof of erasure (issue 23, item 3)."""
    contact_id = await a_person_with_history(database)
    before = found_in(await dump(database), ADDRESS)
    assert {h.split(".")[0] for h in before} >= {"address", "event", "inbound_item", "outbox", "review_item",
                                                  "suppression", "event_address"}, before
    assert any("base64" in h for h in before) and any("=40" in h for h in before)
    assert any("(decoded)" in h for h in before)
    settings = settings_for(database)
    result = await erase(database, settings, ADDRESS, f"asked by phone; {ADDRESS} wants out", T0 + timedelta(days=1),
                         operator="kim")
    assert result is not None and result.applied is not None and result.counts["erased"] == 1
    values = await dump(database)
    assert found_in(values, ADDRESS) == []
    assert not [v for _, _, v in values if isinstance(v, str) and ("Anna Svensson" in v or v == "R-77")]
    assert found_in(values, OTHER)                      # the other contact is untouched
    async with database.sessions() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None and contact.name is None and contact.origin == "erased"
        tomb = (await s.scalars(select(Tombstone))).one()
        assert ["*", "*"] in tomb.optouts and tomb.suppression == "hard_bounce" and tomb.key_id == "k1"
        erased = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.erased"))).one()
    payload = erased.payload
    assert payload["address"] is None and payload["address_hash"] == tomb.digest and payload["state"] == "erased"
    assert payload["operator"] == "kim" and payload["contact_id"] == contact_id
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(payload, SCHEMA)
    # Idempotent: a second erasure finds only the tombstone and writes nothing.
    again = await erase(database, settings, ADDRESS, "again", T0 + timedelta(days=2), operator="kim")
    assert again is not None and again.applied is None
    assert len(await dump(database)) == len(values)


async def test_after_erasure_every_path_finds_the_tombstone_and_stays_blocked(database):
    contact_id = await a_person_with_history(database)
    settings = settings_for(database)
    await erase(database, settings, ADDRESS, "GDPR request 12", T0 + timedelta(days=1), operator="kim")
    # the pre-send lookup
    view = await show(database.sessions, settings, ADDRESS)
    assert view is not None and view.erased and {p["state"] for p in view.preferences} == {"unsubscribed"}
    # a click with an old token names the anonymised contact: nothing to act on, nothing created
    click = Decision(item_id="click-old", kind=Kind.CLICK, source="queue", verified=True, reason="old link",
                     actions=(Action(ActionType.UNSUBSCRIBE, "", contact_id=contact_id),))
    await apply(click, database.unit_of_work(), T0 + timedelta(days=2))
    assert (await show(database.sessions, settings, ADDRESS)).erased
    # a bounce: the tombstone's suppression stands, nothing is written in plain text
    await receive(database, dsn(ADDRESS), T0 + timedelta(days=3), rcpt="bounces@mail.example.org")
    assert (await show(database.sessions, settings, ADDRESS)).erased
    # an import brings the address back: its opt-outs and suppression come back with it
    result = await import_rows(database, parse_csv(f"address,units\n{ADDRESS},alumni\n", settings),
                               T0 + timedelta(days=4), "again.csv", operator="ops")
    assert result.created == 1 and result.kept_opt_out == 1
    view = await show(database.sessions, settings, ADDRESS)
    assert view is not None and not view.erased and view.contact_id != contact_id
    assert {p["state"] for p in view.preferences} == {"unsubscribed"} and view.suppressions
    # an emailed request (unverified opt-in words) cannot lift it either
    await receive(database, reply(ADDRESS, "avregistrera mig"), T0 + timedelta(days=5))
    view = await show(database.sessions, settings, ADDRESS)
    assert {p["state"] for p in view.preferences} == {"unsubscribed"} and view.suppressions


async def test_erasure_refuses_bad_input_and_changes_nothing(database):
    await a_person_with_history(database)
    settings = settings_for(database)
    before = len(await dump(database))
    with pytest.raises(ValueError):
        await erase(database, settings, "not-an-address", "why", T0, operator="kim")
    with pytest.raises(ValueError):
        await erase(database, settings, ADDRESS, "   ", T0, operator="kim")
    assert await erase(database, settings, "nobody@example.se", "why", T0, operator="kim") is None
    assert len(await dump(database)) == before


def test_the_cli_exports_and_erases_with_clear_exit_codes(tmp_path, monkeypatch, capsys):
    from tests.conftest import EXAMPLE_TOML
    from worker.cli.main import main

    monkeypatch.setenv("UNSUBD_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    (tmp_path / "c.csv").write_text(f"address,name,units\n{ADDRESS},Anna Svensson,alumni\n")
    cfg = ["--config", str(EXAMPLE_TOML)]
    assert main(["contacts", "import", str(tmp_path / "c.csv"), *cfg]) == 0
    capsys.readouterr()
    assert main(["contacts", "export", ADDRESS, *cfg]) == 0
    assert json.loads(capsys.readouterr().out)["contact"]["name"] == "Anna Svensson"
    assert main(["contacts", "export", ADDRESS, "--summary", *cfg]) == 0
    assert "alumni" in capsys.readouterr().out
    assert main(["contacts", "export", "nobody@example.se", *cfg]) == 1
    assert main(["contacts", "export", "nonsense", *cfg]) == 2
    assert main(["contacts", "erase", ADDRESS, "--reason", " ", *cfg]) == 2
    assert main(["contacts", "erase", "nobody@example.se", "--reason", "x", *cfg]) == 1
    capsys.readouterr()
    assert main(["contacts", "erase", ADDRESS, "--reason", "asked by mail", "--operator", "kim", *cfg]) == 0
    out = capsys.readouterr().out
    assert "erased 1 address" in out and ADDRESS not in out
    assert main(["contacts", "erase", ADDRESS, "--reason", "again", *cfg]) == 0
    assert "already erased" in capsys.readouterr().out
    assert main(["contacts", "show", ADDRESS, "--json", *cfg]) == 0
    assert json.loads(capsys.readouterr().out)["erased"] is True
