"""Database engine and the SQLAlchemy unit of work that handlers.apply writes through."""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from sqlalchemy import event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from handlers.model import Decision, State
from handlers.plan import ContactState, CurrentState, Plan, PreferenceRow, SoftBounceRow
from worker.errors import DatabaseUnavailable
from worker.models import (Address, Contact, Event, EventAddress, Outbox, Preference, ReviewItem, SoftBounce,
                           Suppression)


def create_engine(url: str, *, for_reads: bool = False) -> AsyncEngine:
    """An engine for `url`. SQLite gets WAL and synchronous=FULL.

    On SQLite, a write engine starts every transaction with BEGIN IMMEDIATE: it takes
    the write lock at once, so a second process waits on the busy timeout instead of
    failing with "database is locked" when a read transaction tries to upgrade. A read
    engine (`for_reads`) starts with a plain BEGIN: WAL gives it a snapshot, and it
    never takes the write lock. synchronous=FULL makes a commit durable before it
    returns, which is what an SMTP 250 promises.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every session ends with its own COMMIT or ROLLBACK, so the pool's extra ROLLBACK
    # on check-in would only cost another round trip through aiosqlite's thread.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)
    begin = "BEGIN" if for_reads else "BEGIN IMMEDIATE"

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None    # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is worth retrying (lost connection, lock, serialisation)."""
    if isinstance(exc, DatabaseUnavailable | OperationalError | ConnectionError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig)
        return bool(re.search(r"deadlock|could not serialize|database is locked|unique|duplicate key", text, re.I))
    return False


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class SqlUnitOfWork:
    """handlers.apply.UnitOfWork on SQLAlchemy: one session, one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: AsyncSession | None = None
        self._committed = False

    @property
    def session(self) -> AsyncSession:
        assert self._session is not None, "use `async with uow:`"
        return self._session

    async def __aenter__(self) -> SqlUnitOfWork:
        await self._db.acquire_write()
        try:
            self._session = self._db.write_sessions()
            self._committed = False
            await self._session.begin()
        except BaseException:
            self._db.release_write()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        try:
            if not self._committed:
                await self._session.rollback()
        finally:
            await self._session.close()
            self._session = None
            self._db.release_write()

    async def commit(self) -> None:
        await self.session.commit()
        self._committed = True

    async def event_exists(self, item_id: str) -> bool:
        found = await self.session.scalar(select(Event.id).where(Event.item_id == item_id))
        return found is not None

    async def recent_unverified_optouts(self, since: datetime) -> int:
        """Unverified opt-outs acted on (not held for review) since `since`: the spoofing guard's count."""
        return await self.session.scalar(
            select(func.count()).select_from(Event).where(
                Event.kind == "optout", Event.verified.is_(False), Event.review.is_(False),
                Event.occurred_at >= since)) or 0

    async def contact_addresses(self, contact_ids: list[int]) -> dict[int, str]:
        """The first email address of each contact that exists."""
        found: dict[int, str] = {}
        for contact_id, address in (await self.session.execute(
                select(Address.contact_id, Address.address)
                .where(Address.contact_id.in_(contact_ids), Address.channel == "email")
                .order_by(Address.id))).all():
            found.setdefault(contact_id, address)
        return found

    async def load_state(self, addresses: list[str], soft_since: datetime) -> CurrentState:
        state = CurrentState()
        if not addresses:
            return state
        rows = (await self.session.execute(
            select(Address.address, Contact.id, Contact.seq)
            .join(Contact, Contact.id == Address.contact_id)
            .where(Address.address.in_(addresses))
            .with_for_update(of=Contact)         # serialises sequence numbers per contact (PostgreSQL)
        )).all()
        by_contact: dict[int, list[ContactState]] = {}
        for address, contact_id, seq in rows:
            cs = ContactState(contact_id=contact_id, seq=seq)
            state.contacts[address] = cs
            by_contact.setdefault(contact_id, []).append(cs)
        if by_contact:
            prefs = (await self.session.scalars(
                select(Preference).where(Preference.contact_id.in_(by_contact)))).all()
            for p in prefs:
                for cs in by_contact[p.contact_id]:
                    cs.preferences[(p.unit, p.channel)] = PreferenceRow(p.unit, p.channel, State(p.state),
                                                                        p.changed_at)
        for address, reason in (await self.session.execute(
                select(Suppression.address, Suppression.reason)
                .where(Suppression.address.in_(addresses), Suppression.active.is_(True)))).all():
            state.suppressed[address] = reason
        for address, ref, occurred_at in (await self.session.execute(
                select(SoftBounce.address, SoftBounce.ref, SoftBounce.occurred_at)
                .where(SoftBounce.address.in_(addresses), SoftBounce.cleared_at.is_(None),
                       SoftBounce.occurred_at >= soft_since)
                .order_by(SoftBounce.occurred_at))).all():
            state.soft_bounces.setdefault(address, []).append(SoftBounceRow(ref, occurred_at))
        return state

    async def record(self, decision: Decision, event_id: str, changes: Plan, now: datetime) -> None:
        s = self.session
        s.add(Event(id=event_id, item_id=decision.item_id, kind=decision.kind.value, source=decision.source,
                    reason=decision.reason, review=decision.review, verified=decision.verified,
                    actions=[a.to_json() for a in decision.actions], evidence=dict(decision.evidence),
                    occurred_at=now))
        await s.flush()
        for kind, due in _review_kinds(decision):
            s.add(ReviewItem(event_id=event_id, kind=kind, reason=decision.reason[:2000],
                             address=_concerned_address(decision), created_at=now, due_at=due))
        contact_ids = await self._contact_ids(decision, changes, now)
        for address in dict.fromkeys(a.address for a in decision.actions):
            s.add(EventAddress(event_id=event_id, address=address, contact_id=contact_ids.get(address)))
        for sup in changes.suppressions:
            row = await s.scalar(select(Suppression).where(Suppression.address == sup.address))
            if row is None:
                s.add(Suppression(address=sup.address, contact_id=contact_ids.get(sup.address), reason=sup.reason,
                                  active=True, event_id=event_id, created_at=now))
            else:
                row.active, row.reason, row.event_id, row.created_at, row.released_at = (
                    True, sup.reason, event_id, now, None)
        for soft in changes.soft_bounces:
            s.add(SoftBounce(address=soft.address, ref=soft.ref, status=soft.status, reason=soft.reason,
                             event_id=event_id, occurred_at=now))
        if changes.cleared:
            await s.execute(update(SoftBounce).where(SoftBounce.address.in_(changes.cleared),
                                                     SoftBounce.cleared_at.is_(None)).values(cleared_at=now))
        if changes.releases:
            await s.execute(update(Suppression).where(Suppression.address.in_(changes.releases),
                                                      Suppression.active.is_(True))
                            .values(active=False, released_at=now, event_id=event_id))
        for pref in changes.preferences:
            contact_id = contact_ids[pref.address]
            row = await s.scalar(select(Preference).where(
                Preference.contact_id == contact_id, Preference.unit == pref.unit, Preference.channel == pref.channel))
            if row is None:
                row = Preference(contact_id=contact_id, unit=pref.unit, channel=pref.channel)
                s.add(row)
            row.state, row.reason, row.source, row.event_id, row.changed_at = (
                pref.state.value, pref.reason, decision.source, event_id, now)
        last_seq: dict[int, int] = {}
        for upd in changes.updates:
            contact_id = contact_ids[upd.address]
            s.add(Outbox(event_id=event_id, contact_id=contact_id, sequence=upd.sequence,
                         routing_key=upd.routing_key, payload={**upd.payload, "contact_id": contact_id},
                         created_at=now))
            last_seq[contact_id] = max(last_seq.get(contact_id, 0), upd.sequence)
        for contact_id, seq in last_seq.items():
            await s.execute(update(Contact).where(Contact.id == contact_id).values(seq=seq, updated_at=now))
        await s.flush()

    async def _contact_ids(self, decision: Decision, changes: Plan, now: datetime) -> dict[str, int]:
        addresses = list(dict.fromkeys(a.address for a in decision.actions))
        found = dict((await self.session.execute(
            select(Address.address, Address.contact_id).where(Address.address.in_(addresses)))).all()
        ) if addresses else {}
        for address in changes.new_contacts:
            if address in found:
                continue
            contact = Contact(name=None, origin=decision.kind.value, seq=0, created_at=now, updated_at=now)
            self.session.add(contact)
            await self.session.flush()
            self.session.add(Address(contact_id=contact.id, channel="email", address=address, created_at=now))
            found[address] = contact.id
        await self.session.flush()
        return found


def _review_kinds(decision: Decision) -> list[tuple[str, datetime | None]]:
    """The review items a decision opens: one when it is for review, one per rights request."""
    kinds: list[tuple[str, datetime | None]] = []
    if decision.review:
        kinds.append(("decision", None))
    rights = decision.evidence.get("rights_request") if isinstance(decision.evidence, dict) else None
    if isinstance(rights, dict):
        due = None
        try:
            due = datetime.fromisoformat(str(rights.get("deadline"))).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
        kinds.append(("rights_request", due))
    return kinds


def _concerned_address(decision: Decision) -> str | None:
    for action in decision.actions:
        if action.address:
            return action.address
    sender = decision.evidence.get("from") if isinstance(decision.evidence, dict) else None
    return sender if isinstance(sender, str) and "@" in sender else None


class Database:
    """The engines and session factories, built once by worker/app.py.

    `sessions()` is for reading. Every write goes through `transaction()` or
    `unit_of_work()`. On SQLite, writers in this process queue on an asyncio lock:
    SQLite allows one writer at a time, and its busy handler backs off in sleeps of up
    to 100 ms, while the lock hands over at once. Other processes still meet the
    busy timeout.
    """

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        sqlite = self.engine.dialect.name == "sqlite"
        separate_reads = sqlite and make_url(url).database not in (None, "", ":memory:")
        self.read_engine = create_engine(url, for_reads=True) if separate_reads else self.engine
        self.sessions = sessionmaker(self.read_engine)
        self.write_sessions = sessionmaker(self.engine)
        self._lock = asyncio.Lock() if sqlite else None

    @classmethod
    def connect(cls, url: str) -> Database:
        return cls(url)

    async def acquire_write(self) -> None:
        if self._lock is not None:
            await self._lock.acquire()

    def release_write(self) -> None:
        if self._lock is not None:
            self._lock.release()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction: committed on normal exit, rolled back on error."""
        await self.acquire_write()
        try:
            async with self.write_sessions() as session, session.begin():
                yield session
        finally:
            self.release_write()

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
