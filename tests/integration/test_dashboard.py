"""The dashboard's figures (worker.ops.dashboard), on SQLite and PostgreSQL: events made by
real decisions (classified mail and queue items, one-clicks, a review held), each figure
checked against a count the test keeps itself of what it sent in."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from handlers.classify import classify
from handlers.context import Context
from handlers.events import page
from handlers.events.upstream import SentReport
from handlers.model import Decision, Inbound, Kind, item_key
from handlers.state.apply import apply
from worker.ops.dashboard import OPTOUT_SOURCES, daily, live
from worker.store import sent_counts
from worker.store.models import Outbox
from tests.conftest import make_settings
from tests.support.messages import dsn

TODAY = date(2026, 12, 6)
UNITS = ("alumni", "research-news", "student-comms", "events", "*")


def reply(sender: str, body: str) -> bytes:
    """An emailed opt-out from `sender` to the alumni mailbox."""
    return (f"From: Olle <{sender}>\r\nTo: alumni@mail.example.org\r\nSubject: {body}\r\n"
            f"Message-ID: <{item_key(sender, body)}@example.se>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\r\nOlle\r\n").encode()


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)


def settings_for(database):
    return make_settings(database.engine.url.render_as_string(hide_password=False))


def zero() -> dict[str, int]:
    return {"hard": 0, "soft": 0, "complaints": 0, "auto": 0, **{f"optout.{s}": 0 for s in OPTOUT_SOURCES}}


class Feed:
    """Applies real decisions and keeps its own tally of what each should count as."""

    def __init__(self, database) -> None:
        self.db = database
        self.settings = settings_for(database)
        self.ctx = Context.from_settings(self.settings)
        self.expected: dict[tuple[date, str], Counter[str]] = {}

    def count(self, day: date, unit: str, what: str, n: int = 1) -> None:
        self.expected.setdefault((day, unit), Counter())[what] += n

    async def mail(self, raw: bytes, rcpt: str, now: datetime) -> Decision:
        decision = classify(Inbound.from_smtp(raw, "mailer@example.se", (rcpt,), now), self.ctx, now)
        await apply(decision, self.db.unit_of_work(), now)
        return decision

    async def queue(self, body: dict, now: datetime) -> Decision:
        raw = json.dumps(body).encode()
        item = Inbound(id=item_key("test", raw), raw=raw, mail_from=None, rcpt_tos=(), received_at=now,
                       source="queue")
        decision = classify(item, self.ctx, now)
        await apply(decision, self.db.unit_of_work(), now)
        return decision

    async def hard_bounce(self, address: str, list_id: str, unit: str, now: datetime) -> None:
        raw = dsn(address).replace(b"alumni.mail.example.org", list_id.encode())
        d = await self.mail(raw, "bounces@mail.example.org", now)
        assert d.kind is Kind.BOUNCE and d.evidence["unit"] == unit and not d.review
        self.count(now.date(), unit, "hard")

    async def soft_bounce(self, address: str, now: datetime) -> None:
        d = await self.mail(dsn(address, status="4.2.2", diagnostic="smtp; 452 4.2.2 mailbox full"),
                            "bounces@mail.example.org", now)
        assert [a.type.value for a in d.actions] == ["soft_bounce"]
        self.count(now.date(), "alumni", "soft")

    async def complaint(self, address: str, unit: str, now: datetime) -> None:
        d = await self.queue({"type": "complaint", "address": address, "unit": unit}, now)
        assert d.kind is Kind.COMPLAINT and d.actions and not d.review
        self.count(now.date(), unit, "complaints")

    async def emailed_optout(self, address: str, now: datetime) -> None:
        d = await self.mail(reply(address, "avregistrera mig"), "alumni@mail.example.org", now)
        assert d.kind is Kind.OPTOUT and not d.review
        self.count(now.date(), "alumni", "optout.reply")

    async def one_click(self, address: str, unit: str, now: datetime) -> None:
        d = page.one_click(address, unit, "email", f"token-{address}-{now.isoformat()}", {"token_unit": unit})
        await apply(d, self.db.unit_of_work(), now)
        self.count(now.date(), unit, "optout.one_click")

    async def auto_reply(self, sender: str, now: datetime) -> None:
        raw = (f"From: {sender}\r\nTo: alumni@mail.example.org\r\nSubject: Out of office\r\n"
               f"Auto-Submitted: auto-replied\r\nMessage-ID: <{item_key(sender, now.isoformat())}@example.se>\r\n"
               f"\r\nI am away until Monday.\r\n").encode()
        d = await self.mail(raw, "alumni@mail.example.org", now)
        assert d.kind is Kind.AUTOREPLY
        self.count(now.date(), "*", "auto")

    async def held_for_review(self, address: str, now: datetime) -> None:
        """An unclear request: held, so it counts for nothing."""
        d = Decision(item_id=f"held-{address}", kind=Kind.OPTOUT, review=True, reason="unclear",
                     source="smtp")
        await apply(d, self.db.unit_of_work(), now)


async def history(database) -> Feed:
    feed = Feed(database)
    d0, d1, d2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY
    await feed.hard_bounce("a1@example.se", "alumni.mail.example.org", "alumni", at(d0, 9))
    await feed.hard_bounce("a2@example.se", "alumni.mail.example.org", "alumni", at(d0, 10))
    await feed.hard_bounce("r1@example.se", "forskningsnytt.mail.example.org", "research-news", at(d1, 8))
    await feed.soft_bounce("s1@example.se", at(d1, 11))
    await feed.soft_bounce("s2@example.se", at(d2, 7))
    await feed.complaint("c1@example.se", "alumni", at(d1, 12))
    await feed.complaint("c2@example.se", "events", at(d2, 13))
    await feed.emailed_optout("o1@example.se", at(d0, 15))
    await feed.one_click("o2@example.se", "student-comms", at(d2, 16))
    await feed.one_click("o3@example.se", "alumni", at(d2, 23))
    await feed.auto_reply("away@example.se", at(d1, 6))
    await feed.held_for_review("h1@example.se", at(d2, 9))
    # Outside the window: the day before it, and not counted.
    await feed.hard_bounce("old@example.se", "alumni.mail.example.org", "alumni", at(d0 - timedelta(days=1), 23))
    await sent_counts.record(database, [SentReport(d1, "alumni", "email", 4000),
                                        SentReport(d1, "alumni", "sms", 99),
                                        SentReport(d2, "events", "email", 500)], "test", at(d2, 1))
    return feed


def figures(row) -> Counter[str]:
    out = Counter({"hard": row.hard_bounces, "soft": row.soft_bounces, "complaints": row.complaints,
                   "auto": row.auto_replies})
    out.update({f"optout.{s}": n for s, n in row.optouts.items()})
    return +out


async def test_daily_rows_match_what_was_sent_in(database):
    feed = await history(database)
    rows = await daily(database, feed.settings, days=3, today=TODAY)
    days = [TODAY - timedelta(days=n) for n in (2, 1, 0)]
    assert [(r.day, r.unit) for r in rows] == [(d, u) for d in days for u in UNITS]
    for row in rows:
        assert figures(row) == +feed.expected.get((row.day, row.unit), Counter()), (row.day, row.unit)
        assert set(row.optouts) == set(OPTOUT_SOURCES)
    by = {(r.day, r.unit): r for r in rows}
    alumni_d1 = by[days[1], "alumni"]
    assert alumni_d1.sent == 4000 and alumni_d1.complaints == 1          # email only: the sms count is apart
    assert alumni_d1.complaint_rate == pytest.approx(1 / 4000)
    assert by[days[2], "events"].complaint_rate == pytest.approx(1 / 500)
    assert by[days[0], "alumni"].sent is None and by[days[0], "alumni"].complaint_rate is None
    assert sum(r.hard_bounces for r in rows) == 3                          # the older bounce is outside


async def test_one_unit_only_and_a_longer_window(database):
    feed = await history(database)
    rows = await daily(database, feed.settings, days=30, unit="alumni", today=TODAY)
    assert len(rows) == 30 and {r.unit for r in rows} == {"alumni"}
    assert rows[0].day == TODAY - timedelta(days=29) and rows[-1].day == TODAY
    expected = sum((c for (d, u), c in feed.expected.items() if u == "alumni"), Counter())
    assert expected["hard"] == 3                    # a1, a2 and the older one, all in the 30 days
    assert sum((figures(r) for r in rows), Counter()) == expected
    with pytest.raises(ValueError):
        await daily(database, feed.settings, days=0, today=TODAY)


async def test_live_counts_the_outbox_backlog_and_its_age(database):
    feed = await history(database)
    now = at(TODAY, 23) + timedelta(minutes=30)
    figures_now = await live(database, feed.settings, now=now)
    async with database.sessions() as s:
        waiting = await s.scalar(select(func.count()).select_from(Outbox).where(Outbox.published_at.is_(None)))
        oldest_at = min((await s.scalars(select(Outbox.created_at).where(Outbox.published_at.is_(None)))).all())
    assert waiting > 0 and figures_now["outbox_backlog"] == waiting
    assert figures_now["outbox_lag_seconds"] == pytest.approx((now - oldest_at).total_seconds())
    assert figures_now["queue_depth"] == 0
    async with database.transaction() as s:
        await s.execute(update(Outbox).values(published_at=now))
    assert await live(database, feed.settings, now=now) == {"queue_depth": 0.0, "outbox_backlog": 0.0,
                                                            "outbox_lag_seconds": 0.0}
