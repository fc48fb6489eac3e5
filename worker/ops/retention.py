"""Retention (issue 23, item 5): records kept only as long as `[retention]` says.

`due` reads what is past its period, per class; `run` removes it, in batches (at most
`retention.batch` contacts or rows each), every batch a command decided in
handlers.events.retention and written by handlers.state.apply in one transaction: an
event of kind admin, source `retention`, operator `retention`. Contacts go exactly as
an erasure takes them (their "no"s stay as tombstones); the rules of each class and the
meaning of "last interaction" are in handlers.events.retention.

One run at a time: on PostgreSQL `run` holds the session advisory lock `LOCK_KEY`
(`pg_try_advisory_lock`) for its whole length, and a second run, in any process, that
cannot take it does nothing and says so (`RunResult.skipped`). SQLite (embedded mode) is
one process, whose writes are one at a time anyway; there is no lock to take.
`run_daily` is the loop `unsubd serve` runs (worker.app, in a process with the consumer role).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import AsyncIterator, Awaitable, Callable, Sequence

from sqlalchemy import func, select, text, union, union_all

from config import Settings
from config.settings import RetentionSettings
from handlers.events import retention as rules
from handlers.model import Decision
from handlers.state.apply import apply
from worker.ops.rights import tombstone_keys
from worker.store.db import Database
from worker.store.models import (Address, Contact, Event, EventAddress, InboundItem, Membership, Outbox, Preference,
                                 ReviewItem, SoftBounce, Suppression, Tombstone)

log = logging.getLogger("unsubd.retention")

# The PostgreSQL advisory lock a run holds: the bytes "unsubret" as a bigint. Any process
# of any deployment on the same database uses the same key, so only one runs at a time.
LOCK_KEY = 8461827697875772788
Progress = Callable[[str, int], Awaitable[None]]


@dataclass
class Due:
    """What is past its period, per class (ids; contacts by contact id)."""

    contacts: list[int] = field(default_factory=list)
    review_items: list[int] = field(default_factory=list)
    events_delete: list[str] = field(default_factory=list)
    events_empty: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    raw_mail: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"contacts": len(self.contacts), "review_items": len(self.review_items),
                "events": len(self.events_delete) + len(self.events_empty), "evidence": len(self.evidence),
                "raw_mail": len(self.raw_mail)}


@dataclass
class RunResult:
    due: dict[str, int]
    done: dict[str, int] = field(default_factory=dict)     # per class: contacts erased, rows changed
    detail: dict[str, int] = field(default_factory=dict)   # per `<table>.<rule>` (event.kept: emptied, not deleted)
    batches: int = 0
    dry_run: bool = False
    skipped: str | None = None                             # why nothing was done


def _referring() -> Sequence[object]:
    return (Preference.event_id, Membership.event_id, Suppression.event_id, SoftBounce.event_id, Outbox.event_id,
            Tombstone.event_id, ReviewItem.event_id, ReviewItem.resolution_event_id)


async def find_due(db: Database, policy: rules.Policy, now: datetime) -> Due:
    """Read what is past its period (nothing is written)."""
    out = Due()
    async with db.sessions() as s:
        kinds = {k: policy.cutoff(k, now) for k in ("alumni", "non_alumni")}
        loosest = max((c for c in kinds.values() if c is not None), default=None)
        if loosest is not None:
            times = union_all(
                select(Contact.id.label("cid"), Contact.created_at.label("at")),
                select(EventAddress.contact_id, Event.occurred_at).join(Event, Event.id == EventAddress.event_id)
                .where(EventAddress.contact_id.is_not(None)),
                select(Address.contact_id, Event.occurred_at)
                .join(EventAddress, EventAddress.address == Address.address)
                .join(Event, Event.id == EventAddress.event_id),
                select(Preference.contact_id, Preference.changed_at),
                select(Membership.contact_id, Membership.joined_at),
            ).subquery()
            last = func.max(times.c.at)
            rows = (await s.execute(
                select(times.c.cid, last).where(times.c.cid.in_(select(Address.contact_id)))
                .group_by(times.c.cid).having(last < loosest))).all()
            ids = [cid for cid, _ in rows]
            alumni: dict[int, set[str]] = {}
            if policy.alumni_units and ids:
                for cid, unit in (await s.execute(select(Membership.contact_id, Membership.unit).where(
                        Membership.unit.in_(sorted(policy.alumni_units))))).all():
                    alumni.setdefault(cid, set()).add(unit)
            out.contacts = rules.due_contacts(
                (rules.ContactSeen(cid, at, frozenset(alumni.get(cid, ()))) for cid, at in rows), policy, now)
        cutoff = policy.cutoff("review_items", now)
        if cutoff is not None:
            out.review_items = list((await s.scalars(select(ReviewItem.id).where(
                ReviewItem.resolved_at.is_not(None), ReviewItem.resolved_at < cutoff).order_by(ReviewItem.id))).all())
        cutoff = policy.cutoff("events", now)
        if cutoff is not None:
            refs = union(*(select(col).where(col.is_not(None)) for col in _referring()))
            old = select(Event.id).where(Event.occurred_at < cutoff).order_by(Event.id)
            free = (await s.scalars(old.where(Event.id.not_in(refs)))).all()
            held = (await s.scalars(old.where(Event.id.in_(refs), Event.reason != rules.MARKER))).all()
            out.events_delete, out.events_empty = rules.event_fates(
                [(i, False) for i in free] + [(i, True) for i in held])
        cutoff = policy.cutoff("evidence", now)
        if cutoff is not None:
            going = set(out.events_delete) | set(out.events_empty)
            out.evidence = [i for i in (await s.scalars(select(Event.id).where(
                Event.occurred_at < cutoff, Event.reason != rules.MARKER).order_by(Event.id))).all()
                if i not in going]
        cutoff = policy.cutoff("raw_mail", now)
        if cutoff is not None:
            out.raw_mail = list((await s.scalars(select(InboundItem.id).where(
                InboundItem.status.in_(("done", "failed")), InboundItem.received_at < cutoff,
                func.length(InboundItem.raw) > 0).order_by(InboundItem.id))).all())
    return out


async def due(db: Database, settings: Settings, now: datetime) -> dict[str, int]:
    """How many records of each class are past their period now (nothing is written)."""
    return (await find_due(db, rules.Policy.from_settings(settings.retention), now)).counts()


@asynccontextmanager
async def run_lock(db: Database) -> AsyncIterator[bool]:
    """Whether this run may go ahead: on PostgreSQL, whether it took the advisory lock
    (held until the block ends); on SQLite always."""
    if db.dialect != "postgresql":
        yield True
        return
    async with db.engine.connect() as conn:
        got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}))
        await conn.commit()
        try:
            yield got
        finally:
            if got:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                await conn.commit()


async def run(db: Database, settings: Settings, now: datetime, dry_run: bool = False,
              on_due: Callable[[dict[str, int]], None] | None = None,
              progress: Progress | None = None) -> RunResult:
    """Remove what is past its period. `on_due` hears the counts per class before anything
    is written; `progress(class, done so far)` after each batch. With `dry_run` it only counts.

    Raises ValueError when contacts are due but there are no keys to make their tombstones
    with (PostgreSQL without `tokens.keys`); nothing is written then.
    """
    policy = rules.Policy.from_settings(settings.retention)
    if dry_run:
        result = RunResult(due=(await find_due(db, policy, now)).counts(), dry_run=True)
        if on_due is not None:
            on_due(result.due)
        return result
    async with run_lock(db) as got:
        if not got:
            log.info("retention: another process is running it; skipped")
            return RunResult(due={}, skipped="another process is running retention (PostgreSQL advisory lock "
                                             f"{LOCK_KEY} is held); nothing done")
        found = await find_due(db, policy, now)
        result = RunResult(due=found.counts())
        keys = tombstone_keys(db, settings) if found.contacts else None
        if found.contacts and keys is None:
            raise ValueError("no keys to hash erased addresses with: set tokens.keys (UNSUBD_TOKENS__KEYS)")
        if on_due is not None:
            on_due(result.due)
        size = settings.retention.batch
        done = {name: 0 for name in rules.CLASSES}

        async def write(name: str, decision: Decision) -> None:
            uow = db.unit_of_work()
            applied = await apply(decision, uow, now)
            for key, n in uow.retained.items():
                result.detail[key] = result.detail.get(key, 0) + n
            if name == "contacts":
                done[name] += applied.counts.get("erased", 0)
            else:
                done[name] += sum(uow.retained.values())
            result.batches += 1
            if progress is not None:
                await progress(name, done[name])

        for batch in rules.batches(found.contacts, size):
            async with db.sessions() as s:
                addresses = list((await s.scalars(select(Address.address).where(
                    Address.contact_id.in_(list(batch))).order_by(Address.contact_id, Address.id))).all())
            if addresses:
                assert keys is not None
                period = f"non-alumni {policy.describe('non_alumni')}, alumni {policy.describe('alumni')}"
                await write("contacts", rules.erase_contacts(addresses, len(batch), period, keys))
        for batch in rules.batches(found.review_items, size):
            await write("review_items", rules.remove_rows("review_items", policy.describe("review_items"),
                                                          delete=batch))
        for batch in rules.batches(found.events_delete, size):
            await write("events", rules.remove_rows("events", policy.describe("events"), delete=batch))
        for batch in rules.batches(found.events_empty, size):
            await write("events", rules.remove_rows("events", policy.describe("events"), empty=batch))
        for batch in rules.batches(found.evidence, size):
            await write("evidence", rules.remove_rows("evidence", policy.describe("evidence"), empty=batch))
        for batch in rules.batches(found.raw_mail, size):
            await write("raw_mail", rules.remove_rows("raw_mail", policy.describe("raw_mail"), blank=batch))
        result.done = done
    log.info("retention run", extra={"batches": result.batches,
                                     **{f"due_{k}": v for k, v in result.due.items()},
                                     **{f"done_{k}": v for k, v in result.done.items()}})
    return result


def next_run(retention: RetentionSettings, now: datetime) -> datetime:
    """When `serve` runs retention next: `interval` seconds from now, or else the next `run_at` (UTC)."""
    if retention.interval is not None:
        return now + timedelta(seconds=retention.interval)
    hour, minute = (int(p) for p in retention.run_at.split(":"))
    at = datetime.combine(now.date(), time(hour, minute), tzinfo=now.tzinfo)
    return at if at > now else at + timedelta(days=1)


async def run_daily(db: Database, settings: Settings, stopping: asyncio.Event,
                    clock: Callable[[], datetime], ran: Callable[[RunResult], None] | None = None) -> None:
    """Run retention at every `next_run` until `stopping` is set. A failed run is logged and
    tried again at the next time; it never stops the worker."""
    while not stopping.is_set():
        now = clock()
        wait = max(0.0, (next_run(settings.retention, now) - now).total_seconds())
        try:
            await asyncio.wait_for(stopping.wait(), timeout=wait)
            return
        except asyncio.TimeoutError:
            pass
        try:
            result = await run(db, settings, clock())
        except asyncio.CancelledError:
            raise
        except Exception as exc:                  # noqa: BLE001 - logged; the next run tries again
            log.warning("retention run failed, will try at the next time: %s: %s", type(exc).__name__,
                        str(exc)[:200])
            continue
        if ran is not None:
            ran(result)
