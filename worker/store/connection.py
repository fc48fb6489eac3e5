"""The connection a write transaction runs on (WriteConn), and the two ways a transaction
runs beside SQLAlchemy's own async path: whole in the SQLite writer thread (`write_blocking`),
and on PostgreSQL's asyncpg connection itself (`write_driven`): Core statements compiled
once (_Driven), their errors worded as SQLAlchemy's, and a failed connection shown to the pool.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

R = TypeVar("R")


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


async def _after_driven_failure(sa_conn: Any, driver: Any) -> None:
    if driver.is_closed():
        try:
            await sa_conn.exec_driver_sql("SELECT 1")   # fails; SQLAlchemy sees the disconnect
        except Exception:                                # noqa: BLE001 - expected
            pass
    elif driver.is_in_transaction():
        await sa_conn.invalidate()


def _run_to_end(coroutine: Awaitable[R]) -> R:
    """Run a coroutine that never suspends (it awaits only WriteConn.execute in blocking mode)."""
    try:
        coroutine.send(None)                  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop.value
    coroutine.close()                         # type: ignore[attr-defined]
    raise RuntimeError("a transaction run in the SQLite writer thread awaited something that suspends")


async def write_driven(engine: AsyncEngine, work: Callable[[WriteConn], Awaitable[R]]) -> tuple[R, int]:
    """PostgreSQL: `work` on a pooled connection's asyncpg connection, in a transaction
    of asyncpg's (BEGIN and COMMIT are a round trip each, with no more around them).
    Returns `work`'s result and the number of outbox rows it wrote.

    SQLAlchemy never sees this transaction, so after a failure the connection is
    checked here: one still in a transaction (a cancelled statement) is discarded; one
    that is closed (a database restart) is shown to SQLAlchemy, which then discards
    it and every pooled connection older than it, as it does after its own failures.
    """
    async with engine.connect() as sa_conn:
        driver = (await sa_conn.get_raw_connection()).driver_connection
        wc = WriteConn(driver, engine.dialect.name, blocking=False, compile_for=engine.dialect)
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


def write_blocking(engine: Engine, work: Callable[[WriteConn], Awaitable[R]]) -> tuple[R, int]:
    """SQLite file: `work` in one transaction on the plain `engine`, run to its end in the
    calling (writer) thread. Returns `work`'s result and the number of outbox rows it wrote."""
    with engine.begin() as conn:
        wc = WriteConn(conn, engine.dialect.name, blocking=True)
        return _run_to_end(work(wc)), wc.outbox_rows
