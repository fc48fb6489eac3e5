"""A redacted complaint whose original carries only X-NV-Recipient-Id reaches the contact imported with it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import Inbound, Kind
from worker.ops.contacts import ImportError_, import_rows, parse_csv
from worker.store.models import Contact, Preference, Suppression
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
# Complaints are acted on only from a proven feedback loop (issue 22): isp.example is one,
# and our MTA (mx.mail.example.org) stamps each report below with its dkim=pass.
SETTINGS = make_settings(UNSUBD_TRUSTED_AUTHSERV_IDS='["mx.mail.example.org"]',
                         UNSUBD_COMPLAINTS__FBL_SOURCES='["isp.example"]')


def complaint(recipient_id: str, n: int = 1, to: str = "redacted@isp.example") -> Inbound:
    raw = (
        "Authentication-Results: mx.mail.example.org; dkim=pass header.d=isp.example\n"
        "From: fbl@isp.example\nTo: fbl@mail.example.org\nSubject: complaint\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=f\n\n"
        "--f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: isp/1\nVersion: 1\n\n"
        "--f\nContent-Type: text/rfc822-headers\n\nFrom: Alumninytt <alumni@mail.example.org>\n"
        f"To: {to}\nList-Id: <alumni.mail.example.org>\nX-NV-Recipient-Id: {recipient_id}\n"
        f"Message-ID: <c{n}@mail.example.org>\n\n--f--\n"
    ).encode()
    return Inbound.from_smtp(raw, "fbl@isp.example", ["fbl@mail.example.org"], NOW)


def test_import_reads_recipient_ids_and_refuses_bad_ones():
    rows = parse_csv("address,recipient_id\na@example.se,79e3b0d0\nb@example.se,\n", SETTINGS)
    assert [r.recipient_id for r in rows] == ["79e3b0d0", None]
    with pytest.raises(ImportError_) as dup:
        parse_csv("address,recipient_id\na@example.se,x1\nb@example.se,x1\n", SETTINGS)
    assert "already on line 2" in dup.value.problems[0]
    with pytest.raises(ImportError_) as long:
        parse_csv("address,recipient_id\na@example.se," + "x" * 65 + "\n", SETTINGS)
    assert "64" in long.value.problems[0]


async def test_an_import_never_moves_a_recipient_id_to_another_contact(database):
    await import_rows(database, parse_csv("address,recipient_id\na@example.se,r1\n", SETTINGS), NOW, "1.csv")
    with pytest.raises(ImportError_) as taken:
        await import_rows(database, parse_csv("address,recipient_id\nb@example.se,r1\n", SETTINGS), NOW, "2.csv")
    assert "belongs to another contact" in taken.value.problems[0]
    async with database.sessions() as s:
        assert (await s.scalars(select(Contact.recipient_id))).all() == ["r1"]      # rolled back: no b


async def test_a_redacted_complaint_is_applied_to_the_contact_with_that_recipient_id(database):
    csv = "address,units,recipient_id\nolga@example.se,alumni,79e3b0d0\npia@example.se,alumni,a25b5241\n"
    await import_rows(database, parse_csv(csv, SETTINGS), NOW, "c.csv")
    decision = classify(complaint("79e3b0d0"), Context.from_settings(SETTINGS), NOW)
    assert decision.kind is Kind.COMPLAINT and not decision.review
    applied = await apply(decision, database.unit_of_work(), NOW)
    assert applied.updates == 2
    async with database.sessions() as s:
        suppressed = (await s.scalars(select(Suppression.address))).all()
        unsubscribed = (await s.execute(select(Preference.contact_id, Preference.unit, Preference.channel)
                                        .where(Preference.state == "unsubscribed"))).all()
        olga = (await s.scalars(select(Contact.id).where(Contact.recipient_id == "79e3b0d0"))).one()
    assert suppressed == ["olga@example.se"]
    assert [tuple(r) for r in unsubscribed] == [(olga, "alumni", "email")]


async def test_an_unknown_recipient_id_changes_nothing(database):
    await import_rows(database, parse_csv("address\nolga@example.se\n", SETTINGS), NOW, "c.csv")
    redacted = complaint("ffffffff", 2, to="Undisclosed recipients:;")
    applied = await apply(classify(redacted, Context.from_settings(SETTINGS), NOW), database.unit_of_work(), NOW)
    assert applied.updates == 0 and not applied.duplicate
    async with database.sessions() as s:
        assert (await s.scalars(select(Suppression))).all() == []


async def test_with_an_unknown_recipient_id_the_original_to_stands(database):
    await import_rows(database, parse_csv("address\nolga@example.se\n", SETTINGS), NOW, "c.csv")
    applied = await apply(classify(complaint("ffffffff", 3, to="olga@example.se"), Context.from_settings(SETTINGS), NOW),
                          database.unit_of_work(), NOW)
    assert applied.updates == 2
    async with database.sessions() as s:
        assert (await s.scalars(select(Suppression.address))).all() == ["olga@example.se"]
