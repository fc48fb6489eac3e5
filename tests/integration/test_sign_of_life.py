"""A delivery report is a sign of life: soft bounces counted before it stop counting (issue 3 item 3)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from handlers.context import Context
from handlers.state.apply import apply
from handlers.classify import classify
from handlers.model import ActionType, Inbound
from handlers.state.plan import BouncePolicy
from worker.store.models import SoftBounce, Suppression
from tests.conftest import make_settings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SETTINGS = make_settings()
POLICY = BouncePolicy(threshold=3, window=timedelta(days=30))


def report(action: str, status: str, n: int) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: bounces@mail.example.org\nSubject: report\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nA report.\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; dora@example.se\nAction: {action}\nStatus: {status}\n\n"
        f"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <n{n}@mail.example.org>\nSubject: x\n\n--b--\n"
    ).encode()


async def feed(database, action: str, status: str, n: int):
    item = Inbound.from_smtp(report(action, status, n), "", ["bounces@mail.example.org"], T0 + timedelta(days=n))
    decision = classify(item, Context.from_settings(SETTINGS), item.received_at)
    await apply(decision, database.unit_of_work(), item.received_at, POLICY)
    return decision


async def state(database):
    async with database.sessions() as s:
        open_rows = (await s.scalars(select(SoftBounce).where(SoftBounce.cleared_at.is_(None)))).all()
        suppressed = (await s.scalars(select(Suppression.reason))).all()
    return len(open_rows), suppressed


async def test_a_delivery_in_between_resets_the_soft_bounce_count(database):
    await feed(database, "failed", "4.2.2", 1)
    await feed(database, "failed", "4.2.2", 2)
    assert await state(database) == (2, [])
    delivered = await feed(database, "delivered", "2.0.0", 3)
    assert [a.type for a in delivered.actions] == [ActionType.DELIVERED]
    assert await state(database) == (0, [])
    await feed(database, "failed", "4.2.2", 4)
    await feed(database, "failed", "4.2.2", 5)
    assert await state(database) == (2, [])          # two since the sign of life: below the threshold
    await feed(database, "failed", "4.2.2", 6)
    assert await state(database) == (3, ["soft_bounce_threshold"])


async def test_a_delivery_report_does_not_lift_a_suppression(database):
    await feed(database, "failed", "5.1.1", 1)
    await feed(database, "delivered", "2.0.0", 2)
    assert (await state(database))[1] == ["hard_bounce"]
