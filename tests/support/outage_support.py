"""Outages on demand, for tests/e2e/test_outage.py.

`TcpProxy` stands between a client and a server on 127.0.0.1; `cut()` drops every
connection through it and refuses new ones (as a server that has gone away does),
`restore()` listens again on the same port. `BrokenDisk` makes every write to a SQLite
file fail with the driver's own "disk I/O error" while it is broken, reads still
working. `descendants` and `signal_all` find and signal a process's children, for a
`serve` subprocess whose parser processes are to be frozen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from typing import Any

from sqlalchemy import Engine, event


class TcpProxy:
    """127.0.0.1:`port` (chosen at start) forwarding to `target`; can be cut and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0                       # connections accepted, over the proxy's life
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def up(self) -> bool:
        return self._server is not None

    async def cut(self) -> None:
        """Stop listening and drop every connection: the clients see a reset, then refusals."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()


class BrokenDisk:
    """While `broken`, every statement on the given engines fails as SQLite does when its
    disk fails: sqlite3.OperationalError("disk I/O error"), which SQLAlchemy wraps as it
    wraps the driver's own (the error is raised where the driver would raise it)."""

    def __init__(self, *engines: Engine) -> None:
        self.broken = False
        self.failures = 0
        self._engines = engines
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._check)

    def _check(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.broken:
            self.failures += 1
            raise sqlite3.OperationalError("disk I/O error")

    def remove(self) -> None:
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._check)


def descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
