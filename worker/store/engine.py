"""Engines: the async engine for a database URL (SQLite pragmas and BEGIN mode, PostgreSQL pool),
the SQLite writer thread's plain engine, session factories, and what a database error means."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from worker.errors import DatabaseUnavailable


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

