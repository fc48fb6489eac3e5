"""The few named infrastructure failures. Each transport maps them to one reply:
SMTP 451, AMQP nack, HTTP 503.

`is_outage` is the one place that says whether an exception is a failure of the
infrastructure (the database or the broker unreachable, a connection lost, too many
connections, a serialisation failure or deadlock, SQLite busy or a disk error) rather
than of the item being handled. An outage never counts against an item's attempts:
the consumer pauses and tries the same item again once the service answers.
Everything else (a parse failure, a constraint the item's data violates, a bug) is
the item's failure and counts.
"""

from __future__ import annotations

import re
import sqlite3


class QueueUnavailable(Exception):
    """The inbound queue could not store an item durably; the sender must retry."""


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused the transaction; retry later."""


# PostgreSQL SQLSTATEs (Appendix A of its manual) that say "the server, not this
# statement": class 08 connection exception, 53 insufficient resources (disk full,
# out of memory, too many connections), 57P operator intervention (shutdown, starting
# up), 58 system error (I/O), and the conflicts a retry resolves: 40001 serialisation
# failure, 40P01 deadlock, 55P03 lock not available, 25006 read-only transaction (a
# standby that has not been promoted yet).
_PG_TRANSIENT_CLASSES = ("08", "53", "57P", "58")
_PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03", "25006"})
# SQLite result codes (https://sqlite.org/rescode.html) that are the file's or the
# machine's state, not the statement's: busy/locked (another writer), I/O errors, a
# file that cannot be opened or written, a full disk, no memory.
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY",
                     "SQLITE_FULL", "SQLITE_NOMEM", "SQLITE_PROTOCOL")
_SQLITE_TRANSIENT_TEXT = re.compile(
    r"database is locked|database table is locked|disk I/O error|unable to open database file|"
    r"readonly database|database or disk is full|out of memory|locking protocol", re.I)
_CLOSED_TEXT = re.compile(r"connection (is |was )?closed|connection lost|closed the connection|"
                          r"connection was reset|broken pipe|not connected|pool .*closed", re.I)
_MAX_DEPTH = 8


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it wraps) is an infrastructure failure, not the item's.

    Follows SQLAlchemy's `orig` and `__cause__` (an explicit `raise ... from`) a few steps
    down, since drivers' errors arrive wrapped (SQLAlchemy's OperationalError around
    asyncpg's or sqlite3's); not `__context__`, since an item's own error raised while
    some earlier outage was being handled is still the item's. An exception of an
    unknown kind is not an outage: it counts as the item's.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _MAX_DEPTH:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        verdict = _judge(e)
        if verdict is not None:
            return verdict
        for inner in (getattr(e, "orig", None), e.__cause__):
            if isinstance(inner, BaseException):
                todo.append(inner)
    return False


_PG_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is an outage of the passing kind: two transactions in each other's
    way (a serialisation failure, a deadlock, a lock not granted, SQLite busy), which
    trying again at once resolves, with no pause for the whole consumer."""
    e: BaseException | None = exc
    for _ in range(_MAX_DEPTH):
        if e is None:
            return False
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str) and state in _PG_CONFLICT_STATES:
            return True
        name = getattr(e, "sqlite_errorname", None)
        if isinstance(name, str) and name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return True
        if isinstance(e, sqlite3.OperationalError) and not name and "is locked" in str(e):
            return True
        inner = getattr(e, "orig", None)
        e = inner if isinstance(inner, BaseException) else e.__cause__
    return False


def _judge(e: BaseException) -> bool | None:
    """True: an outage; False: certainly the item's (or a bug's); None: look at what it wraps."""
    if isinstance(e, DatabaseUnavailable | QueueUnavailable | ConnectionError | TimeoutError):
        return True
    if isinstance(e, sqlite3.Error):
        name = str(getattr(e, "sqlite_errorname", "") or "")
        if name:
            return name.startswith(_SQLITE_TRANSIENT)
        return bool(_SQLITE_TRANSIENT_TEXT.search(str(e)))
    if isinstance(e, OSError):
        return True                       # sockets, files: the machine's state
    module = type(e).__module__ or ""
    if module.startswith("sqlalchemy"):
        return _judge_sqlalchemy(e)
    if module.startswith("asyncpg"):
        return _judge_asyncpg(e)
    if module.startswith(("aiormq", "aio_pika", "pamqp")):
        return _judge_amqp(e)
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        return _pg_state_transient(state)
    if _SQLITE_TRANSIENT_TEXT.search(str(e)) and "sqlite" in module:
        return True
    return None


def _pg_state_transient(state: str) -> bool:
    return state.startswith(_PG_TRANSIENT_CLASSES) or state in _PG_TRANSIENT_STATES


def _judge_sqlalchemy(e: BaseException) -> bool | None:
    from sqlalchemy import exc as sa_exc

    if isinstance(e, sa_exc.DBAPIError):
        if e.connection_invalidated:
            return True
        return None                       # decided by the driver's error, in `orig`
    if isinstance(e, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True                       # pool: a dead connection, or no connection free in time
    return None


def _judge_asyncpg(e: BaseException) -> bool | None:
    import asyncpg

    if isinstance(e, asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError |
                  asyncpg.TooManyConnectionsError):
        return True
    if isinstance(e, asyncpg.PostgresError):
        state = getattr(e, "sqlstate", None)
        return _pg_state_transient(state) if isinstance(state, str) else False
    if isinstance(e, asyncpg.InterfaceError):
        # "connection is closed" is the server's going; "another operation is in
        # progress" and the like are this program's bugs.
        return bool(_CLOSED_TEXT.search(str(e)))
    return None


def _judge_amqp(e: BaseException) -> bool | None:
    import aiormq.exceptions as amqp

    if isinstance(e, amqp.AMQPConnectionError | amqp.ConnectionClosed | amqp.ChannelInvalidStateError |
                  amqp.ChannelClosed):
        return True
    return None
