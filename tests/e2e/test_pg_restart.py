"""PostgreSQL restarted under a running worker: one failed attempt, then work goes on.

The engine does not ping a connection before each use (that costs three round trips a
transaction with asyncpg). What it relies on instead: a connection the restart broke
fails its transaction once, SQLAlchemy then discards every pooled connection from
before the failure, and the caller retries (the consumer re-delivers the item, the
relay tries again). This restarts the real cluster on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from handlers.state.apply import apply, apply_all
from handlers.model import Action, ActionType, Decision, Kind
from worker.store import migrate
from worker.store.db import Database
from worker.store.models import Outbox, Suppression
from worker.outbox.relay import FeedPublisher, Relay
from tests.conftest import PG_HOST, PG_PORT, _create_pg_database, _drop_pg_database, make_settings, port_open
from tests.conftest import service_missing

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
CLUSTERS = Path("/etc/postgresql")


def bounce(item_id: str, address: str) -> Decision:
    act = Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown", hard=True)
    return Decision(item_id=item_id, kind=Kind.BOUNCE, actions=(act,), reason="dsn: 1 failed (5.1.1)")


def need_restartable_postgres() -> None:
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    if PG_HOST != "127.0.0.1" or shutil.which("pg_ctlcluster") is None or not CLUSTERS.is_dir():
        service_missing("a local PostgreSQL cluster that pg_ctlcluster can restart")


def restart_postgres() -> None:
    version = sorted(p.name for p in CLUSTERS.iterdir())[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                   check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while not port_open(PG_HOST, PG_PORT):
        assert time.monotonic() < deadline, "PostgreSQL did not come back within 60 s"
        time.sleep(0.2)


async def attempts_until_done(work) -> list[str]:
    """Run `work` until it succeeds (at most three times); what each attempt gave."""
    outcomes = []
    for _ in range(3):
        try:
            await work()
        except DBAPIError as exc:
            outcomes.append("invalidated" if exc.connection_invalidated else f"error {type(exc.orig).__name__}")
            continue
        outcomes.append("ok")
        break
    return outcomes


async def test_a_database_restart_costs_at_most_one_attempt() -> None:
    need_restartable_postgres()
    name = await _create_pg_database()
    db = Database.connect(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}")
    try:
        await migrate.upgrade(db.engine)
        # Several pooled connections, all of which the restart will break.
        await asyncio.gather(*(apply(bounce(f"w{i}", f"w{i}@example.se"), db.unit_of_work(), T0)
                               for i in range(4)))
        await asyncio.to_thread(restart_postgres)

        first = await attempts_until_done(
            lambda: apply(bounce("after", "after@example.se"), db.unit_of_work(), T0))
        assert first in (["ok"], ["invalidated", "ok"])
        # The failure discarded the other broken connections too: nothing fails again.
        for i in range(4):
            await apply(bounce(f"n{i}", f"n{i}@example.se"), db.unit_of_work(), T0)
        relay = Relay(make_settings(), db, FeedPublisher(), lambda: T0)
        assert await relay.drain() == 9
        async with db.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Suppression)) == 9
            assert await s.scalar(select(func.count()).select_from(Outbox).where(Outbox.published_at.is_(None))) == 0
    finally:
        await db.close()
        await _drop_pg_database(name)


async def test_a_database_restart_costs_a_consumers_write_at_most_one_attempt() -> None:
    """The same for Database.write, which runs on the asyncpg connection itself, where
    SQLAlchemy does not see the failure unless it is shown it (worker.store.connection.write_driven)."""
    need_restartable_postgres()
    name = await _create_pg_database()
    db = Database.connect(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}")

    async def write(item_id: str) -> None:
        await db.write(lambda conn: apply_all([bounce(item_id, f"{item_id}@example.se")],
                                              db.unit_of_work(joined=conn), T0))
    try:
        await migrate.upgrade(db.engine)
        await asyncio.gather(*(write(f"w{i}") for i in range(4)))
        await asyncio.to_thread(restart_postgres)

        first = await attempts_until_done(lambda: write("after"))
        assert first in (["ok"], ["invalidated", "ok"])
        for i in range(4):
            await write(f"n{i}")
        async with db.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Suppression)) == 9
    finally:
        await db.close()
        await _drop_pg_database(name)


async def test_the_relay_listens_again_after_a_database_restart() -> None:
    """Other processes' commits wake the relay through LISTEN/NOTIFY. A restart closes the
    listening connection; the relay must notice, drain (it may have missed a
    notification) and listen again, or it would fall back to polling for good."""
    need_restartable_postgres()
    name = await _create_pg_database()
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    db, other = Database.connect(url), Database.connect(url)
    stopping = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await migrate.upgrade(db.engine)
        relay = Relay(make_settings(), db, FeedPublisher(), lambda: T0)
        task = asyncio.create_task(relay.run(stopping))
        for _ in range(100):
            if relay.listening:
                break
            await asyncio.sleep(0.05)
        assert relay.listening
        await asyncio.to_thread(restart_postgres)
        for _ in range(400):                  # RELISTEN_SECONDS apart, while the database starts
            if relay.listening:
                break
            await asyncio.sleep(0.05)
        assert relay.listening, "the relay did not LISTEN again after the restart"
        # And it works: a commit in another Database (another process, as far as the
        # relay knows) is published.
        await attempts_until_done(lambda: apply(bounce("x1", "x1@example.se"), other.unit_of_work(), T0))
        for _ in range(200):
            if relay.published >= 1:
                break
            await asyncio.sleep(0.05)
        assert relay.published == 1
    finally:
        stopping.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await db.close()
        await other.close()
        await _drop_pg_database(name)
