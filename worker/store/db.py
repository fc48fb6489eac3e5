"""Database engine and the SQLAlchemy unit of work that handlers.state.apply writes through."""

from __future__ import annotations

import asyncio
import json
import re
from collections import namedtuple
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, TypeVar

from concurrent.futures import ThreadPoolExecutor

import asyncpg
from sqlalchemy import (Engine, String, Text, TypeDecorator, any_, bindparam, cast, column, event, func, insert,
                        literal, literal_column, select, union_all, update)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError
from sqlalchemy.ext.asyncio import (AsyncEngine, AsyncSession, async_sessionmaker,
                                    create_async_engine)

from handlers.model import Decision, State
from handlers.state.plan import ContactState, CurrentState, Plan, PreferenceRow, Profile, ReviewState, SoftBounceRow
from worker.errors import DatabaseUnavailable
from worker.store.models import (Address, Contact, Event, EventAddress, Membership, Outbox, Preference, ReviewItem,
                           SoftBounce,
                           Suppression, UtcDateTime)


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
        # No pre-ping: with asyncpg it costs three round trips (BEGIN, a ping, ROLLBACK) on
        # every checkout, about a fifth of a decision's transaction. A connection that a
        # database restart has broken fails its transaction once; SQLAlchemy then discards
        # every pooled connection older than the failure, and the caller retries (the
        # consumer re-delivers, the relay tries again, HTTP answers 503).
        return create_async_engine(url, pool_size=10, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Every session ends with its own COMMIT or ROLLBACK, so the pool's extra ROLLBACK
    # on check-in would only cost another round trip through aiosqlite's thread.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)
    _set_up_sqlite(engine.sync_engine, "BEGIN" if for_reads else "BEGIN IMMEDIATE")
    return engine


def create_sync_engine(url: str) -> Engine:
    """A plain (thread-bound) SQLite engine on the same file, set up as `create_engine`'s write engine."""
    engine = sa_create_engine(make_url(url).set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30},
                              pool_reset_on_return=None)
    _set_up_sqlite(engine, "BEGIN IMMEDIATE")
    return engine


def _set_up_sqlite(engine: Engine, begin: str) -> None:
    """WAL, synchronous=FULL, foreign keys and a busy timeout on every connection; `begin`
    starts every transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None    # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def _run_to_end(coroutine: Awaitable[R]) -> R:
    """Run a coroutine that never suspends (it awaits only WriteConn.execute in blocking mode)."""
    try:
        coroutine.send(None)                  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop.value
    coroutine.close()                         # type: ignore[attr-defined]
    raise RuntimeError("a transaction run in the SQLite writer thread awaited something that suspends")


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is worth retrying (lost connection, lock, serialisation)."""
    if isinstance(exc, DatabaseUnavailable | OperationalError | ConnectionError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        message = str(exc.orig)
        return bool(re.search(r"deadlock|could not serialize|database is locked|unique|duplicate key", message, re.I))
    return False


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# Statements built once: building SQLAlchemy expressions per call cost more than running
# them. Lists are bound as expanding parameters; the statements of a decision's own
# transaction have a PostgreSQL form (key True) that binds them as one array instead
# (among), so that their SQL, and the statement asyncpg prepares, is the same whatever
# the list's length.


def among(column: Any, name: str, pg: bool) -> Any:
    """`column` is one of the list parameter `name`: `= ANY(array)` on PostgreSQL, an
    expanding IN elsewhere."""
    if pg:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


_EVENTS_EXISTING = {pg: select(Event.item_id).where(among(Event.item_id, "item_ids", pg)) for pg in (False, True)}
_RECENT_UNVERIFIED = select(func.count()).select_from(Event).where(
    Event.kind == "optout", Event.verified.is_(False), Event.review.is_(False),
    Event.occurred_at >= bindparam("since"))
_RECIPIENT_IDS = select(Contact.recipient_id, Contact.id).where(Contact.recipient_id.in_(bindparam("rids", expanding=True)))
_CONTACT_ADDRESSES = (select(Address.contact_id, Address.address)
                      .where(Address.contact_id.in_(bindparam("ids", expanding=True)), Address.channel == "email")
                      .order_by(Address.id))
# A contact and its preference rows in one query; the lock serialises sequence numbers
# per contact (PostgreSQL; SQLite has one writer anyway).
_STATE_CONTACTS = {pg: (select(Address.address, Contact.id, Contact.seq, Preference.unit, Preference.channel,
                               Preference.state, Preference.changed_at)
                        .join(Contact, Contact.id == Address.contact_id)
                        .outerjoin(Preference, Preference.contact_id == Contact.id)
                        .where(among(Address.address, "addresses", pg))
                        .order_by(Contact.id)      # locks taken in one order by every transaction: no deadlock
                        .with_for_update(of=Contact))
                   for pg in (False, True)}


def _marks(pg: bool) -> tuple[Any, ...]:
    """Open soft bounces (oldest first) and active suppressions of the addresses, in one query."""
    return (
        select(literal("soft").label("mark"), SoftBounce.address, SoftBounce.ref.label("detail"),
               SoftBounce.occurred_at.label("at"))
        .where(among(SoftBounce.address, "addresses", pg),
               SoftBounce.cleared_at.is_(None), SoftBounce.occurred_at >= bindparam("since")),
        select(literal("suppressed"), Suppression.address, Suppression.reason, literal(None, UtcDateTime()))
        .where(among(Suppression.address, "addresses", pg), Suppression.active.is_(True)),
    )


# PostgreSQL also reserves, from contact.id's own sequence, an id for each address that
# has no contact yet, so a new contact can be written with the transaction's other rows
# instead of in a round trip of its own. An id left unused is a gap in the sequence.
_UNKNOWN = func.unnest(bindparam("addresses", type_=ARRAY(Text()))).table_valued("address").render_derived("unknown")
_NEW_CONTACT_IDS = (
    select(literal("new_contact"), _UNKNOWN.c.address,
           cast(func.nextval(func.pg_get_serial_sequence("contact", "id")), Text()), literal(None, UtcDateTime()))
    .where(~select(Address.id).where(Address.address == _UNKNOWN.c.address).exists()))
# The read ahead also answers the dedupe check: which of the batch's items have an event.
_EVENT_MARKS = {pg: select(literal("event"), Event.item_id, literal(None, String()), literal(None, UtcDateTime()))
                .where(among(Event.item_id, "item_ids", pg)) for pg in (False, True)}
# (PostgreSQL?, with the dedupe check?) -> the marks query
_MARKS_QUERIES = {(pg, events): union_all(*_marks(pg), *([_NEW_CONTACT_IDS] if pg else []),
                                          *([_EVENT_MARKS[pg]] if events else [])).order_by("at")
                  for pg in (False, True) for events in (False, True)}
_ADDRESS_CONTACTS = select(Address.address, Address.contact_id).where(
    Address.address.in_(bindparam("addresses", expanding=True)))
_T_EVENT, _T_EVENT_ADDRESS, _T_REVIEW, _T_SOFT, _T_OUTBOX, _T_CONTACT, _T_ADDRESS = (
    Event.__table__, EventAddress.__table__, ReviewItem.__table__, SoftBounce.__table__, Outbox.__table__,
    Contact.__table__, Address.__table__)
_NEW_CONTACT = insert(_T_CONTACT).returning(_T_CONTACT.c.id)
_CONTACT_SEQ = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
                .values(seq=bindparam("b_seq"), updated_at=bindparam("b_now")))
_CLEAR_SOFT = (update(_T_SOFT).where(_T_SOFT.c.address.in_(bindparam("addresses", expanding=True)),
                                     _T_SOFT.c.cleared_at.is_(None))
               .values(cleared_at=bindparam("b_now")))
_RELEASE = (update(Suppression.__table__)
            .where(Suppression.__table__.c.address.in_(bindparam("addresses", expanding=True)),
                   Suppression.__table__.c.active.is_(True))
            .values(active=False, released_at=bindparam("b_now"), event_id=bindparam("b_event_id")))


# What an import reads and writes beyond the consent state (JOIN actions; handlers.state.plan._plan_join).
_PROFILES = (select(Address.address, Contact.name, Contact.recipient_id, Membership.unit)
             .join(Contact, Contact.id == Address.contact_id)
             .outerjoin(Membership, Membership.contact_id == Contact.id)
             .where(Address.address.in_(bindparam("addresses", expanding=True))))
_JOIN = insert(Membership.__table__)
_PROFILE_NAME = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
                 .values(name=bindparam("b_name"), updated_at=bindparam("b_now")))
_PROFILE_RID = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
                .values(recipient_id=bindparam("b_rid"), updated_at=bindparam("b_now")))
_REVIEW_STATE = select(ReviewItem.id, ReviewItem.resolution, ReviewItem.resolved_at).where(
    ReviewItem.id == bindparam("b_id"))
_SETTLE = (update(_T_REVIEW).where(_T_REVIEW.c.id == bindparam("b_id"), _T_REVIEW.c.resolved_at.is_(None))
           .values(resolved_at=bindparam("b_now"), resolution=bindparam("b_resolution"),
                   resolution_event_id=bindparam("b_event_id")))


def _on_conflict(table: Any, stmt: Any) -> Any:
    """`stmt` (an INSERT into a suppression or preference table) as an upsert: a
    suppression by address, a preference by scope; the new row's values win."""
    ex = stmt.excluded
    if table is SoftBounce.__table__:
        # The same message reported again after the address was cleared (it showed a sign
        # of life, or was released) counts again: the row is revived, not a second one.
        return stmt.on_conflict_do_update(index_elements=["address", "ref"], set_={
            "status": ex.status, "reason": ex.reason, "event_id": ex.event_id, "occurred_at": ex.occurred_at,
            "cleared_at": None})
    if table is Suppression.__table__:
        return stmt.on_conflict_do_update(index_elements=["address"], set_={
            "active": True, "reason": ex.reason, "event_id": ex.event_id, "created_at": ex.created_at,
            "released_at": None})
    return stmt.on_conflict_do_update(index_elements=["contact_id", "unit", "channel"], set_={
        "state": ex.state, "reason": ex.reason, "source": ex.source, "event_id": ex.event_id,
        "changed_at": ex.changed_at})


def _upserts(dialect: str) -> tuple[Any, Any]:
    """INSERT ... ON CONFLICT DO UPDATE for suppressions (by address), preferences (by scope) and
    soft bounces (by address and bounced message)."""
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    return (_on_conflict(Suppression.__table__, ins(Suppression.__table__)),
            _on_conflict(Preference.__table__, ins(Preference.__table__)),
            _on_conflict(SoftBounce.__table__, ins(SoftBounce.__table__)))


_UPSERTS = {name: _upserts(name) for name in ("postgresql", "sqlite")}
# The writes a unit of work holds until its next read or its commit, in the order they
# are then made. First the new rows, each table after the tables it refers to; then
# the updates, which must see the rows inserted before them (a delivery report clears
# the soft bounce counted just before it). Between two flushes no two decisions touch
# one address or contact (see SqlUnitOfWork), so only each decision's own order counts.
_INSERT_SLOTS: dict[str, Any] = {
    "event": _T_EVENT, "contact": _T_CONTACT, "address": _T_ADDRESS, "suppression": Suppression.__table__,
    "soft_bounce": _T_SOFT, "preference": Preference.__table__, "review": _T_REVIEW,
    "event_address": _T_EVENT_ADDRESS, "outbox": _T_OUTBOX,
}
_UPDATE_SLOTS = ("updates", "contact_seq")    # (statement, params) pairs; contact sequence rows
# SQLite: a statement per slot, run as an executemany (PostgreSQL uses _pg_insert_all).
_SQLITE_INSERTS: dict[str, Any] = {**{slot: insert(table) for slot, table in _INSERT_SLOTS.items()},
                                   "suppression": _UPSERTS["sqlite"][0], "preference": _UPSERTS["sqlite"][1],
                                   "soft_bounce": _UPSERTS["sqlite"][2]}
_PG_INSERTS: dict[tuple[tuple[str, tuple[str, ...]], ...], Any] = {}


def _pg_insert_all(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """PostgreSQL: one statement that inserts the held rows of several tables (and
    sets the sequence numbers of the contacts they change).

    `shape` names the slots with rows and their columns. Each slot's rows travel as one
    JSON array (parameter `rows_<slot>`), turned back into rows by jsonb_to_recordset
    and inserted by a data-modifying WITH query; the statement's text depends only on
    the shape, so it is prepared once, whatever the number of rows. Foreign keys are
    checked at the end of the statement, when every part has run.
    """
    stmt = _PG_INSERTS.get(shape)
    if stmt is not None:
        return stmt
    parts = []
    for slot, names in shape:
        if slot == "contact_seq":             # rows of _CONTACT_SEQ's parameters
            c = _T_CONTACT.c
            rows = _json_rows(slot, [column("b_id", c.id.type), column("b_seq", c.seq.type),
                                     column("b_now", _record_type(c.updated_at.type))])
            parts.append(update(_T_CONTACT).where(c.id == rows.c.b_id)
                         .values(seq=rows.c.b_seq, updated_at=rows.c.b_now).cte(f"w_{slot}"))
            continue
        table = _INSERT_SLOTS[slot]
        rows = _json_rows(slot, [column(n, _record_type(table.c[n].type)) for n in names])
        ins = pg_insert(table).from_select(list(names), select(*(rows.c[n] for n in names)))
        if slot in ("suppression", "preference", "soft_bounce"):
            ins = _on_conflict(table, ins)
        parts.append(ins.cte(f"w_{slot}"))
    stmt = _PG_INSERTS[shape] = select(literal_column("1")).add_cte(*parts)
    return stmt


def _json_rows(slot: str, columns: list[Any]) -> Any:
    """The rows passed as the JSON array parameter `rows_<slot>`, as a table."""
    return (func.jsonb_to_recordset(cast(bindparam(f"rows_{slot}", type_=Text()), JSONB))
            .table_valued(*columns).render_derived(name=f"r_{slot}", with_types=True))


def _record_type(type_: Any) -> Any:
    """The type a column's value is read as from the JSON rows. Text for strings, so
    that the INSERT itself checks their length, as it does for a bound value."""
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl
    return Text() if isinstance(type_, String) else type_


# A JSON escape of U+0000 that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _pg_json(rows: list[dict[str, Any]]) -> str:
    """`rows` as the JSON array a flush passes to PostgreSQL.

    PostgreSQL's text and jsonb cannot hold U+0000, and evidence quotes hostile mail
    (NUL bytes in headers and bodies are in the corpus): each NUL becomes a visible
    U+FFFD instead of failing the transaction.
    """
    text = json.dumps(rows, default=_json_value, separators=(",", ":"))
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be written as a JSON row")


async def _after_driven_failure(sa_conn: Any, driver: Any) -> None:
    if driver.is_closed():
        try:
            await sa_conn.exec_driver_sql("SELECT 1")   # fails; SQLAlchemy sees the disconnect
        except Exception:                                # noqa: BLE001 - expected
            pass
    elif driver.is_in_transaction():
        await sa_conn.invalidate()


T = TypeVar("T")
R = TypeVar("R")
# PostgreSQL NOTIFY channel that wakes relays in other processes; migration 0005's trigger
# on outbox sends it at the COMMIT of any transaction that wrote outbox rows.
OUTBOX_CHANNEL = "unsubd_outbox"

BeforeCommit = Callable[["WriteConn"], Awaitable[None]]


class WriteConn:
    """The connection one write transaction runs on: `await conn.execute(statement, params)`.

    Either an AsyncConnection; or (SQLite file databases) a plain connection used from
    the database's writer thread, where `execute` runs at once and never suspends: the
    same transaction code then runs in that thread without a hop to the event loop per
    statement (see Database.write); or (PostgreSQL) the asyncpg connection itself, with
    each Core statement compiled once by SQLAlchemy (see _Driven). `outbox_rows` counts
    the outbox rows written, so the relay can be woken once the transaction has committed.
    """

    def __init__(self, conn: Any, dialect: str, blocking: bool, compile_for: Any = None) -> None:
        self._conn = conn
        self.dialect = dialect
        self._blocking = blocking
        self._compile_for = compile_for       # with an asyncpg `conn`: the SQLAlchemy dialect to compile for
        self.outbox_rows = 0

    async def execute(self, statement: Any, params: Any = None) -> Any:
        if self._blocking:
            return self._conn.execute(statement, params)
        if self._compile_for is not None:
            return await _Driven.of(statement, self._compile_for, params).run(self._conn, params)
        return await self._conn.execute(statement, params)


class _Driven:
    """A Core statement as it runs on the asyncpg connection itself (Database.write on
    PostgreSQL), compiled once for the parameter names it is called with.

    Through SQLAlchemy's own execution path a statement cost 0.3 to 0.6 ms of CPU, two
    to three times what asyncpg itself takes, and a decision's transaction (BEGIN, three
    statements, COMMIT) about 3 ms of CPU in all. Here SQLAlchemy still writes the SQL and
    says how each parameter and result column is processed (the same bind and result
    processors it would apply), once per statement; a call only builds the argument
    tuple. A statement with expanding parameters (IN lists) has its SQL expanded per
    call (construct_expanded_state). bench/consumer.py --postgres, run alternately with
    the code before: 403 and 405 messages/s against 357 and 372.
    """

    _forms: dict[tuple[Any, frozenset[str]], _Driven] = {}
    LIMIT = 512                               # statements are module constants or cached by shape

    def __init__(self, statement: Any, dialect: Any, names: frozenset[str]) -> None:
        self.compiled = statement.compile(dialect=dialect)
        self.expanding = bool(self.compiled.post_compile_params or self.compiled.literal_execute_params)
        self.names = names
        self.processors = {name: proc for name, bind in self.compiled.binds.items()
                           if (proc := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        self.sql: str | None = None
        self.slots: list[tuple[str | None, Any, Any]] = []   # (parameter name or None, constant, processor)
        columns = list(statement.exported_columns)
        self.row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None  # type: ignore[misc]
        self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    @classmethod
    def of(cls, statement: Any, dialect: Any, params: Any) -> _Driven:
        names = frozenset(params[0] if isinstance(params, list) else params or ())
        form = cls._forms.get((statement, names))
        if form is None:
            if len(cls._forms) >= cls.LIMIT:
                cls._forms.clear()
            form = cls._forms[statement, names] = cls(statement, dialect, names)
        return form

    def bind(self, params: dict[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and the positional arguments for one set of parameters."""
        if self.sql is None or self.expanding:
            state = self.compiled.construct_expanded_state(params, escape_names=False)
            procs, values = {**self.processors, **state.processors}, state.parameters
            if self.expanding:
                return state.statement, [procs[n](values[n]) if n in procs else values[n]
                                         for n in state.positiontup or ()]
            self.slots = [(n, None, procs.get(n)) if n in self.names
                          else (None, procs[n](values[n]) if n in procs else values[n], None)
                          for n in state.positiontup or ()]
            self.sql = state.statement
        return self.sql, [(proc(params[n]) if proc else params[n]) if n is not None else constant
                          for n, constant, proc in self.slots]

    async def run(self, conn: Any, params: Any) -> _DrivenResult:
        try:
            if isinstance(params, list):      # executemany: one statement, fixed SQL
                sql, args = self.bind(params[0])
                await conn.executemany(sql, [args] + [self.bind(p)[1] for p in params[1:]])
                return _DrivenResult([])
            sql, args = self.bind(params or {})
            if self.row is None:
                await conn.execute(sql, *args)
                return _DrivenResult([])
            records = await conn.fetch(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise _driver_error(exc, self.compiled.string, conn) from exc
        results = self.results
        if any(results):
            return _DrivenResult([self.row(*(p(v) if p else v for p, v in zip(results, r))) for r in records])
        return _DrivenResult([self.row(*r) for r in records])


class _Scalars(list[Any]):
    def all(self) -> list[Any]:
        return list(self)


class _DrivenResult:
    """The part of SQLAlchemy's Result that transaction code uses, over fetched rows."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def all(self) -> list[Any]:
        return self._rows

    def scalars(self) -> _Scalars:
        return _Scalars(r[0] for r in self._rows)

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise NoResultFound("expected one row") if not self._rows else MultipleResultsFound("expected one row")
        return self._rows[0][0]


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def _driven(step: Awaitable[R], sql: str, conn: Any) -> R:
    """Await a transaction step (BEGIN, COMMIT) on the asyncpg connection, its errors worded."""
    try:
        return await step
    except _DRIVER_ERRORS as exc:
        raise _driver_error(exc, sql, conn) from exc


async def _begin(driver: Any) -> Any:
    """A started asyncpg transaction (on a closed connection, even making one raises)."""
    transaction = driver.transaction()
    await transaction.start()
    return transaction


def _driver_error(exc: BaseException, sql: str, conn: Any) -> DBAPIError:
    """An asyncpg (or socket) error as the SQLAlchemy error its callers expect, without
    the parameters (they hold addresses)."""
    kind = DBAPIError if isinstance(exc, asyncpg.PostgresError) and not conn.is_closed() else OperationalError
    return kind(sql, None, exc, hide_parameters=True, connection_invalidated=conn.is_closed())


class SqlUnitOfWork:
    """handlers.state.apply.UnitOfWork on SQLAlchemy: one connection, one transaction.

    Writes go through Core statements, not through ORM objects. They are held until
    the next read of the database or the commit, then made as one statement per table
    (executemany) for all the decisions recorded since: a batch of decisions whose
    state was read ahead (`read_ahead`) costs a few round trips in all, not a few
    per decision. Every read flushes what is held first, so a read sees every earlier
    `record` (two decisions that touch one address or contact are always separated
    by a read, since the second one's state cannot come from the read-ahead). On
    PostgreSQL the state read also reserves ids for the contacts a decision may create,
    and a flush is one statement for every table (see _pg_insert_all).
    `before_commit` callbacks run inside the transaction just before
    COMMIT (the embedded queue marks its items done there, so "done" and the decision
    are one commit). When the transaction wrote outbox rows, the Database tells its
    listeners after the commit, and on PostgreSQL a NOTIFY tells other processes.

    Standalone (`Database.unit_of_work()`), it opens and commits its own transaction.
    Joined (`Database.unit_of_work(joined=conn)` inside `Database.write`), it runs in
    that transaction, and its `commit` only finishes the writing: the transaction
    commits when the `write` returns.
    """

    def __init__(self, db: Database, joined: WriteConn | None = None) -> None:
        self._db = db
        self._pg = db.dialect == "postgresql"
        self._joined = joined
        self._session: AsyncSession | None = None
        self._conn: WriteConn | None = joined
        self._committed = False
        self.before_commit: list[BeforeCommit] = []
        self._held: dict[str, list[Any]] = {}            # slot (_INSERT_SLOTS, _UPDATE_SLOTS) -> rows
        self._reserved_ids: dict[str, int] = {}            # PostgreSQL: address -> id for its new contact
        self._contact_of: dict[str, int | None] = {}      # address -> contact, as read in this transaction
        # read_ahead's rows per address, for addresses no load_state has asked about
        # yet (after that, record may have changed them, so they are read again).
        self._prefetched: dict[str, tuple[list[Any], list[Any]]] = {}
        self._prefetch_since: datetime | None = None
        # Contacts some load_state has read in this transaction: their sequence and
        # preferences may change from then on, whichever of their addresses is asked.
        self._loaded_contacts: set[int] = set()
        # Set by a consumer that publishes its own updates (worker.outbox.relay.Handoff): the
        # outbox rows written here are claimed until then, and collected in `claimed_rows`.
        self.claimed_until: datetime | None = None
        self.claimed_rows: list[dict[str, Any]] = []

    @property
    def conn(self) -> WriteConn:
        assert self._conn is not None, "use `async with uow:`"
        return self._conn

    async def __aenter__(self) -> SqlUnitOfWork:
        self._committed = False
        self._held = {slot: [] for slot in (*_INSERT_SLOTS, *_UPDATE_SLOTS)}
        self._reserved_ids = {}
        self._contact_of = {}
        self._prefetched, self._prefetch_since, self._loaded_contacts = {}, None, set()
        if self._joined is not None:
            return self
        await self._db.acquire_write()
        try:
            self._session = self._db.write_sessions()
            await self._session.begin()
            self._conn = WriteConn(await self._session.connection(), self._db.dialect, blocking=False)
        except BaseException:
            if self._session is not None:
                await self._session.close()
                self._session = None
            self._db.release_write()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._joined is not None:
            return                            # Database.write commits or rolls back
        assert self._session is not None and self._conn is not None
        outbox_rows = self._conn.outbox_rows
        try:
            if not self._committed:
                await self._session.rollback()
        finally:
            await self._session.close()
            self._session = self._conn = None
            self._db.release_write()
        if self._committed and outbox_rows:
            self._db.outbox_committed()

    async def flush(self) -> None:
        """Make the writes held so far: the new rows (on PostgreSQL in one statement, on
        SQLite one executemany per table), then the updates."""
        conn, held = self.conn, self._held
        if self._db.dialect == "postgresql":
            filled = [slot for slot in (*_INSERT_SLOTS, "contact_seq") if held[slot]]
            if filled:
                shape = tuple((slot, tuple(held[slot][0])) for slot in filled)
                await conn.execute(_pg_insert_all(shape), {f"rows_{slot}": _pg_json(held[slot]) for slot in filled})
        else:
            filled = [slot for slot in _INSERT_SLOTS if held[slot]]
            for slot in filled:
                rows = held[slot]
                await conn.execute(_SQLITE_INSERTS[slot], rows[0] if len(rows) == 1 else rows)
        for slot in filled:
            held[slot] = []
        updates, held["updates"] = held["updates"], []
        for statement, params in updates:
            await conn.execute(statement, params)
        seqs, held["contact_seq"] = held["contact_seq"], []
        if seqs:
            await conn.execute(_CONTACT_SEQ, seqs[0] if len(seqs) == 1 else seqs)

    async def commit(self) -> None:
        conn = self.conn
        await self.flush()
        for callback in self.before_commit:
            await callback(conn)
        if self._session is not None:
            await self._session.commit()
        self._committed = True

    async def recent_unverified_optouts(self, since: datetime) -> int:
        """Unverified opt-outs acted on (not held for review) since `since`: the spoofing guard's count."""
        await self.flush()
        return (await self.conn.execute(_RECENT_UNVERIFIED, {"since": since})).scalar() or 0

    async def profiles(self, addresses: list[str]) -> dict[str, Profile]:
        """Name, recipient id and units of the contact of each known address (for an import)."""
        await self.flush()
        found: dict[str, tuple[str | None, str | None, set[str]]] = {}
        for address, name, rid, unit in (await self.conn.execute(_PROFILES, {"addresses": addresses})).all():
            entry = found.setdefault(address, (name, rid, set()))
            if unit is not None:
                entry[2].add(unit)
        return {a: Profile(name, rid, frozenset(units)) for a, (name, rid, units) in found.items()}

    async def review_state(self, review_id: int) -> ReviewState | None:
        """The review item as this transaction sees it, or None when there is no such item."""
        await self.flush()
        rows = (await self.conn.execute(_REVIEW_STATE, {"b_id": review_id})).all()
        row = rows[0] if rows else None
        if row is None:
            return None
        return ReviewState(review_id=row[0], resolved=(row[1] or "resolved") if row[2] is not None else None)

    async def contacts_by_recipient_id(self, recipient_ids: list[str]) -> dict[str, int]:
        """The contact imported with each recipient id, for the ids that have one."""
        await self.flush()
        return {rid: cid for rid, cid in (await self.conn.execute(_RECIPIENT_IDS, {"rids": recipient_ids})).all()}

    async def contact_addresses(self, contact_ids: list[int]) -> dict[int, str]:
        """The first email address of each contact that exists."""
        await self.flush()
        found: dict[int, str] = {}
        for contact_id, address in (await self.conn.execute(_CONTACT_ADDRESSES, {"ids": contact_ids})).all():
            found.setdefault(contact_id, address)
        return found

    async def read_ahead(self, item_ids: list[str], addresses: list[str], soft_since: datetime) -> set[str]:
        """The item ids among `item_ids` that already have an event; and the state of
        every address the transaction's decisions will ask about, read in two queries
        in all (their contacts locked, as load_state would). The contacts are locked
        before the events are looked at: an item that another transaction was applying
        meanwhile is then seen as done, not written twice."""
        await self.flush()
        if not addresses:
            return set((await self.conn.execute(_EVENTS_EXISTING[self._pg], {"item_ids": item_ids})).scalars())
        rows: dict[str, tuple[list[Any], list[Any]]] = {a: ([], []) for a in addresses}
        for row in (await self.conn.execute(_STATE_CONTACTS[self._pg], {"addresses": addresses})).all():
            rows[row[0]][0].append(row)
        existing: set[str] = set()
        for row in (await self.conn.execute(*self._marks_query(addresses, soft_since, item_ids))).all():
            if row[0] == "event":
                existing.add(row[1])
            else:
                rows[row[1]][1].append(row)
        self._prefetched.update(rows)
        self._prefetch_since = soft_since
        return existing

    def _marks_query(self, addresses: list[str], soft_since: datetime,
                     item_ids: list[str] | None = None) -> tuple[Any, dict[str, Any]]:
        params: dict[str, Any] = {"addresses": addresses, "since": soft_since}
        if item_ids:
            params["item_ids"] = item_ids
        return _MARKS_QUERIES[self._pg, bool(item_ids)], params

    async def load_state(self, addresses: list[str], soft_since: datetime) -> CurrentState:
        state = CurrentState()
        if not addresses:
            return state
        conn = self.conn
        if soft_since == self._prefetch_since and all(
                a in self._prefetched and not any(row[1] in self._loaded_contacts for row in self._prefetched[a][0])
                for a in addresses):
            contact_rows = [row for a in addresses for row in self._prefetched[a][0]]
            marks = sorted((row for a in addresses for row in self._prefetched[a][1]),
                           key=lambda row: (row[3] is None, row[3] or soft_since))
        else:
            await self.flush()
            contact_rows = (await conn.execute(_STATE_CONTACTS[self._pg], {"addresses": addresses})).all()
            marks = (await conn.execute(*self._marks_query(addresses, soft_since))).all()
        for address in addresses:
            self._contact_of[address] = None
            self._prefetched.pop(address, None)        # record may change it from now on
        self._loaded_contacts.update(row[1] for row in contact_rows)
        for address, contact_id, seq, unit, channel, pstate, changed_at in contact_rows:
            cs = state.contacts.get(address)
            if cs is None:
                cs = state.contacts[address] = ContactState(contact_id=contact_id, seq=seq)
                self._contact_of[address] = contact_id
            if unit is not None:
                cs.preferences[(unit, channel)] = PreferenceRow(unit, channel, State(pstate), changed_at)
        for mark, address, detail, at in marks:
            if mark == "suppressed":
                state.suppressed[address] = detail
            elif mark == "new_contact":
                self._reserved_ids[address] = int(detail)
            else:
                state.soft_bounces.setdefault(address, []).append(SoftBounceRow(detail, at))
        return state

    async def record(self, decision: Decision, event_id: str, changes: Plan, now: datetime) -> None:
        conn = self.conn
        evidence = dict(decision.evidence)
        if decision.operator:
            evidence["operator"] = decision.operator
        if changes.dropped:
            evidence["dropped"] = list(changes.dropped)
        row = {"id": event_id, "item_id": decision.item_id, "kind": decision.kind.value, "source": decision.source,
               "reason": decision.reason, "review": decision.review, "verified": decision.verified,
               "actions": [a.to_json() for a in decision.actions], "evidence": evidence,
               "occurred_at": now}
        held = self._held
        held["event"].append(row)
        held["review"].extend(
            {"event_id": event_id, "kind": r.kind, "reason": row["reason"][:2000],
             "address": r.address, "created_at": now,
             "due_at": r.due_at, "resolved_at": None, "resolution": None, "resolution_event_id": None}
            for r in changes.reviews)
        if changes.settles is not None:
            held["updates"].append((_SETTLE, {"b_id": changes.settles[0], "b_resolution": changes.settles[1],
                                              "b_now": now, "b_event_id": event_id}))
        last_by_address: dict[str, int] = {}
        for upd in changes.updates:
            last_by_address[upd.address] = max(last_by_address.get(upd.address, 0), upd.sequence)
        contact_ids, created = await self._contact_ids(decision, changes, now, last_by_address)
        held["event_address"].extend(
            {"event_id": event_id, "address": a, "contact_id": contact_ids.get(a)}
            for a in dict.fromkeys(a.address for a in decision.actions))
        # One row per key (PostgreSQL refuses to update a row twice in one INSERT ... ON
        # CONFLICT); the last change wins, as it would one row at a time.
        suppressions = {s.address: {"address": s.address, "contact_id": contact_ids.get(s.address),
                                    "reason": s.reason, "active": True, "event_id": event_id,
                                    "created_at": now, "released_at": None}
                        for s in changes.suppressions}
        held["suppression"].extend(suppressions.values())
        if changes.soft_bounces:
            held["soft_bounce"].extend(
                {"address": s.address, "ref": s.ref, "status": s.status, "reason": s.reason, "event_id": event_id,
                 "occurred_at": now, "cleared_at": None} for s in changes.soft_bounces)
        if changes.cleared:
            held["updates"].append((_CLEAR_SOFT, {"addresses": list(changes.cleared), "b_now": now}))
        if changes.releases:
            held["updates"].append((_RELEASE, {"addresses": list(changes.releases), "b_now": now,
                                               "b_event_id": event_id}))
        preferences = {(contact_ids[p.address], p.unit, p.channel): {
            "contact_id": contact_ids[p.address], "unit": p.unit, "channel": p.channel, "state": p.state.value,
            "reason": p.reason, "source": decision.source, "event_id": event_id, "changed_at": now}
            for p in changes.preferences}
        held["preference"].extend(preferences.values())
        if changes.memberships:
            held["updates"].append((_JOIN, [{"contact_id": contact_ids[m.address], "unit": m.unit, "source": "import",
                                             "event_id": event_id, "joined_at": now} for m in changes.memberships]))
        for p in changes.profiles:
            if p.name is not None:
                held["updates"].append((_PROFILE_NAME, {"b_id": contact_ids[p.address], "b_name": p.name,
                                                        "b_now": now}))
            if p.recipient_id is not None:
                held["updates"].append((_PROFILE_RID, {"b_id": contact_ids[p.address], "b_rid": p.recipient_id,
                                                       "b_now": now}))
        last_seq: dict[int, int] = {}
        outbox = []
        for upd in changes.updates:
            contact_id = contact_ids[upd.address]
            outbox.append({"event_id": event_id, "contact_id": contact_id, "sequence": upd.sequence,
                           "routing_key": upd.routing_key, "payload": {**upd.payload, "contact_id": contact_id},
                           "created_at": now, "published_at": None, "claimed_until": self.claimed_until})
            last_seq[contact_id] = max(last_seq.get(contact_id, 0), upd.sequence)
        held["outbox"].extend(outbox)
        if self.claimed_until is None:
            conn.outbox_rows += len(outbox)       # relays are told of these after the commit
        else:
            self.claimed_rows.extend(outbox)      # the consumer publishes these itself
        held["contact_seq"].extend({"b_id": contact_id, "b_seq": seq, "b_now": now}
                                   for contact_id, seq in last_seq.items()
                                   if contact_id not in created)   # a new contact is written with its sequence

    async def _contact_ids(self, decision: Decision, changes: Plan, now: datetime,
                           seq_of: dict[str, int]) -> tuple[dict[str, int], set[int]]:
        """The contact of each address the decision acts on, and the ids of the contacts
        created here (with `seq_of[address]`, the last sequence this change gives them)."""
        addresses = list(dict.fromkeys(a.address for a in decision.actions))
        if all(a in self._contact_of for a in addresses):    # read by load_state in this transaction
            found = {a: c for a in addresses if (c := self._contact_of[a]) is not None}
        elif addresses:
            await self.flush()
            found = dict((await self.conn.execute(_ADDRESS_CONTACTS, {"addresses": addresses})).all())
        else:
            found = {}
        created: set[int] = set()
        for address in changes.new_contacts:
            if address in found:
                continue
            contact = {"name": None, "origin": decision.kind.value, "seq": seq_of.get(address, 0),
                       "created_at": now, "updated_at": now}
            contact_id = self._reserved_ids.pop(address, None)
            if contact_id is not None:
                self._held["contact"].append({"id": contact_id, **contact})
            else:                                 # a contact has no references: written at once
                contact_id = (await self.conn.execute(_NEW_CONTACT, contact)).scalar_one()
            self._held["address"].append({"contact_id": contact_id, "channel": "email", "address": address,
                                          "created_at": now})
            found[address] = self._contact_of[address] = contact_id
            created.add(contact_id)
        return found, created


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
        self.dialect = self.engine.dialect.name
        self._lock = asyncio.Lock() if sqlite else None
        self._outbox_listeners: list[Callable[[], None]] = []
        # SQLite file: `write` runs whole transactions in one thread with the plain sqlite3
        # driver. Through aiosqlite every statement costs several hops between the loop
        # and its thread (cursor, execute, fetch, close), and a hop costs up to a
        # millisecond or two on a virtual machine whose idle core must be woken.
        self._writer: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        if separate_reads:
            self._sync_engine = create_sync_engine(url)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unsubd-sqlite-writer")

    def on_outbox(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every transaction of this process that committed outbox rows.

        The relay listens here, so an update is published as soon as it is committed,
        whichever part of the worker made it (consumer, HTTP, CLI), instead of at its next poll.
        """
        self._outbox_listeners.append(listener)

    def outbox_committed(self) -> None:
        for listener in self._outbox_listeners:
            listener()

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

    def unit_of_work(self, joined: WriteConn | None = None) -> SqlUnitOfWork:
        return SqlUnitOfWork(self, joined)

    async def write(self, work: Callable[[WriteConn], Awaitable[R]]) -> R:
        """Run `work(conn)` in one write transaction: committed if it returns, rolled back if it raises.

        On a SQLite file the whole of `work` runs in the writer thread, one hop from the
        loop and back, so it must await nothing but `conn.execute` (which there does not
        suspend). On PostgreSQL it runs on the loop, on the asyncpg connection itself
        (_write_driven). Listeners of `on_outbox` hear of a commit that wrote outbox rows.
        """
        await self.acquire_write()
        try:
            if self._writer is not None:
                result, outbox_rows = await asyncio.get_running_loop().run_in_executor(
                    self._writer, self._write_blocking, work)
            elif self.dialect == "postgresql":
                result, outbox_rows = await self._write_driven(work)
            else:
                async with self.write_sessions() as session, session.begin():
                    wc = WriteConn(await session.connection(), self.dialect, blocking=False)
                    result = await work(wc)
                outbox_rows = wc.outbox_rows
        finally:
            self.release_write()
        if outbox_rows:
            self.outbox_committed()
        return result

    async def _write_driven(self, work: Callable[[WriteConn], Awaitable[R]]) -> tuple[R, int]:
        """PostgreSQL: `work` on a pooled connection's asyncpg connection, in a transaction
        of asyncpg's (BEGIN and COMMIT are a round trip each, with no more around them).

        SQLAlchemy never sees this transaction, so after a failure the connection is
        checked here: one still in a transaction (a cancelled statement) is discarded; one
        that is closed (a database restart) is shown to SQLAlchemy, which then discards
        it and every pooled connection older than it, as it does after its own failures.
        """
        async with self.engine.connect() as sa_conn:
            driver = (await sa_conn.get_raw_connection()).driver_connection
            wc = WriteConn(driver, self.dialect, blocking=False, compile_for=self.engine.dialect)
            try:
                transaction = await _driven(_begin(driver), "BEGIN", driver)
                try:
                    result = await work(wc)
                except BaseException:
                    # `work`'s own exception goes on as it is (a statement's is worded
                    # already; a publisher's is not the database's); a failed ROLLBACK
                    # only leaves the connection to be discarded below.
                    try:
                        await transaction.rollback()
                    except _DRIVER_ERRORS:
                        pass
                    raise
                await _driven(transaction.commit(), "COMMIT", driver)
            except BaseException:
                await _after_driven_failure(sa_conn, driver)
                raise
        return result, wc.outbox_rows

    def _write_blocking(self, work: Callable[[WriteConn], Awaitable[R]]) -> tuple[R, int]:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            wc = WriteConn(conn, self.dialect, blocking=True)
            return _run_to_end(work(wc)), wc.outbox_rows

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown)
            self._writer = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()



class GroupCommit(Generic[T, R]):
    """Gathers concurrent submissions into one `flush(batch)` call: group commit.

    `submit(x)` returns only after the flush that carried `x` returned, with that
    flush's result for `x` (or its exception). Whatever is submitted while a flush is
    running goes into the next one, so under load one transaction (one fsync) carries
    many items, and an item submitted alone is flushed at once: no timer, no added
    latency. `flush` returns one result per item, in order; a result that is an
    exception is raised to that item's submitter only. With `parallel` > 1, that many
    flushes may run at once (PostgreSQL runs transactions side by side; SQLite has one
    writer, so there it stays 1).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | BaseException]]], max_batch: int = 256,
                 parallel: int = 1) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._parallel = parallel
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0
        self.items = 0

    @property
    def waiting(self) -> int:
        """Items submitted and not yet taken into a flush."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._parallel:
            task = asyncio.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                batch = [(x, f) for x, f in batch if not f.cancelled()]   # its session has gone
                if not batch:
                    continue
                self.flushes += 1
                self.items += len(batch)
                try:
                    results = await self._flush([x for x, _ in batch])
                except Exception as exc:              # noqa: BLE001 - every submitter of the batch hears it
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for (_, f), result in zip(batch, results, strict=True):
                    if f.done():
                        continue
                    if isinstance(result, BaseException):
                        f.set_exception(result)
                    else:
                        f.set_result(result)
        except BaseException as exc:                  # cancelled (loop closing): fail what is left
            for _, f in batch + self._pending:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else RuntimeError("group commit stopped"))
            self._pending.clear()
            raise
        finally:
            # At once, not in a done callback: a submit arriving between this runner's
            # last look at `_pending` and such a callback would otherwise find no runner.
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
