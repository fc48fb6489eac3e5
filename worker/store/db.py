"""The store's front door: the names the rest of the worker imports, each from the module that holds it.

    engine        engines, SQLite pragmas and BEGIN mode, session factories, transient errors
    connection    WriteConn, and transactions run in the SQLite writer thread or on asyncpg itself
    statements    the statements a unit of work runs, built once
    pg_flush      PostgreSQL: the held rows of every table written in one WITH statement
    reads         the state a decision is planned on, read ahead or loaded, and other lookups
    unit_of_work  SqlUnitOfWork: the transaction, the held writes, a decision's changes as rows
    database      Database: engines, the write lock, transaction(), unit_of_work(), write()
    group_commit  GroupCommit: concurrent submissions carried by one flush
    models        the schema; migrate and migrations/ bring a database to it
"""

from __future__ import annotations

from worker.store.connection import WriteConn
from worker.store.database import OUTBOX_CHANNEL, Database
from worker.store.engine import create_engine, create_sync_engine, is_transient, redact_url, sessionmaker
from worker.store.group_commit import GroupCommit
from worker.store.statements import among
from worker.store.unit_of_work import BeforeCommit, SqlUnitOfWork

__all__ = [
    "OUTBOX_CHANNEL", "BeforeCommit", "Database", "GroupCommit", "SqlUnitOfWork", "WriteConn", "among",
    "create_engine", "create_sync_engine", "is_transient", "redact_url", "sessionmaker",
]
