"""Daily sent counts per unit and channel (table `sent_count`): how many messages the sending
systems say they sent, the complaint rate's denominator on the console's dashboard.

Why these rows are written here and not through handlers.state.apply: a sent count is
not consent state. It names no contact and no address, it changes nothing anyone will
or will not receive, and no marketing system needs an update for it, so it has no event
of its own, no plan and no outbox row. What a report says is checked in pure code
(handlers.events.upstream.read_sent_counts); this module only stores the checked
entries. A report replaces the count for its (day, unit, channel): a sending system may
resend a day (a retry, or a corrected figure) and the last report stands.

Two ways in, one writer: `POST /v1/sent-counts` (worker.ingress.http) calls `record`;
a `{"type": "sent_counts"}` queue item is decided in handlers.events.upstream and the
consumer calls `write` inside the transaction that records its event.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Iterable

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from handlers.events.upstream import SENT_COUNTS, SentReport
from handlers.model import Decision
from worker.store.connection import WriteConn
from worker.store.database import Database
from worker.store.models import SentCount


COLUMNS = ("day", "unit", "channel", "count", "reported_by", "updated_at")


def _rows(counts: Iterable[SentReport], reported_by: str, now: datetime) -> list[dict[str, object]]:
    return [{"day": c.day, "unit": c.unit, "channel": c.channel, "count": c.count,
             "reported_by": reported_by[:100], "updated_at": now} for c in counts]


def _upsert(insert: Any) -> Any:
    statement = insert(SentCount).values({name: bindparam(name) for name in COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=[SentCount.day, SentCount.unit, SentCount.channel],
        set_={"count": statement.excluded.count, "reported_by": statement.excluded.reported_by,
              "updated_at": statement.excluded.updated_at})


# Built once: PostgreSQL's write path compiles each statement object once (worker.store.connection).
UPSERT = {"postgresql": _upsert(pg_insert), "sqlite": _upsert(sqlite_insert)}


async def write(conn: WriteConn, counts: list[SentReport], reported_by: str, now: datetime) -> int:
    """Insert or replace the counts in the transaction of `conn`; returns how many entries."""
    rows = _rows(counts, reported_by, now)
    # One statement per entry: a report holds a few dozen entries at most (a day per unit and channel).
    for row in rows:
        await conn.execute(UPSERT[conn.dialect], row)
    return len(rows)


def carried_by(decision: Decision) -> tuple[list[SentReport], str] | None:
    """The counts (and who reported them) a queue item's decision carries, or None
    (handlers.events.upstream.decide_sent_counts_event); a decision held for review carries none."""
    evidence = decision.evidence
    if decision.review or evidence.get("type") != SENT_COUNTS or not isinstance(evidence.get(SENT_COUNTS), list):
        return None
    counts = [SentReport(date.fromisoformat(e["day"]), e["unit"], e["channel"], int(e["count"]))
              for e in evidence[SENT_COUNTS]]
    return counts, str(evidence.get("reported_by") or "queue")


async def record(db: Database, counts: list[SentReport], reported_by: str, now: datetime) -> int:
    """Write a checked report in a transaction of its own; returns how many entries."""
    async def work(conn: WriteConn) -> int:
        return await write(conn, counts, reported_by, now)
    return await db.write(work)


async def sent_by_day(db: Database, first: date, last: date, channel: str = "email",
                      unit: str | None = None) -> dict[tuple[date, str], int]:
    """{(day, unit): count} for `channel` between `first` and `last` (both included)."""
    query = (select(SentCount.day, SentCount.unit, func.sum(SentCount.count))
             .where(SentCount.day >= first, SentCount.day <= last, SentCount.channel == channel)
             .group_by(SentCount.day, SentCount.unit))
    if unit is not None:
        query = query.where(SentCount.unit == unit)
    async with db.sessions() as session:
        return {(day, u): int(n) for day, u, n in (await session.execute(query)).all()}
