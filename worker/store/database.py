"""The Database (built once by worker/app.py): its engines and session factories, and the
ways code writes: `transaction()`, `unit_of_work()` and `write()`, one writer at a time on
SQLite; and the news that a commit wrote outbox rows, in this process and in others.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.tokens import Keyring
from worker.store.connection import WriteConn, write_blocking, write_driven
from worker.store.engine import create_engine, create_sync_engine, sessionmaker
from worker.store.unit_of_work import SqlUnitOfWork

R = TypeVar("R")
# PostgreSQL NOTIFY channel that wakes relays in other processes; migration 0005's trigger
# on outbox sends it at the COMMIT of any transaction that wrote outbox rows.
OUTBOX_CHANNEL = "unsubd_outbox"


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
        # The keys erased addresses are hashed under (handlers.events.rights): a unit of work
        # looks up the tombstones of addresses it does not know. Set by worker.app.prepare_database.
        self.tombstone_keys: Keyring | None = None
        # Units whose email opt-out erases the address (config Unit.on_unsubscribe = "erase"),
        # set by worker.app.prepare_database; read by SqlUnitOfWork.on_unsubscribe.
        self.erase_on_unsubscribe: frozenset[str] = frozenset()
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
        (connection.write_driven). Listeners of `on_outbox` hear of a commit that wrote outbox rows.
        """
        await self.acquire_write()
        try:
            if self._writer is not None:
                assert self._sync_engine is not None
                result, outbox_rows = await asyncio.get_running_loop().run_in_executor(
                    self._writer, write_blocking, self._sync_engine, work)
            elif self.dialect == "postgresql":
                result, outbox_rows = await write_driven(self.engine, work)
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

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown)
            self._writer = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
