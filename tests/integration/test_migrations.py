"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from worker.store import migrate
from worker.store.models import Base


async def test_migrations_match_the_models(database):
    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return compare_metadata(context, Base.metadata)

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ: {changes}"
    assert await migrate.current(database.engine) == migrate.head()


@pytest.mark.postgres
async def test_on_postgresql_an_outbox_write_notifies_at_commit_and_only_then():
    """Migration 0005: relays in other processes are woken by a trigger on outbox, so a
    decision's transaction needs no NOTIFY statement of its own; 0006: only for rows
    that no consumer claimed."""
    import asyncio
    from datetime import datetime, timezone

    import asyncpg

    from handlers.state.apply import apply
    from handlers.model import Action, ActionType, Decision, Kind
    from worker.store.db import OUTBOX_CHANNEL, Database
    from tests.conftest import PG_HOST, PG_PORT, _create_pg_database, _drop_pg_database, port_open, service_missing

    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = await _create_pg_database()
    db = Database.connect(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}")
    listener = None
    try:
        await migrate.upgrade(db.engine)
        heard: asyncio.Queue[str] = asyncio.Queue()
        listener = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=name)
        await listener.add_listener(OUTBOX_CHANNEL, lambda *args: heard.put_nowait(args[2]))
        act = Action(ActionType.SUPPRESS, "a@example.se", status="5.1.1", reason="user_unknown", hard=True)
        now = datetime(2026, 3, 1, tzinfo=timezone.utc)
        await apply(Decision(item_id="i1", kind=Kind.BOUNCE, actions=(act,), reason="t"), db.unit_of_work(), now)
        assert await asyncio.wait_for(heard.get(), 5) == OUTBOX_CHANNEL
        # A transaction that writes no outbox row (a repeat of an applied item) says nothing.
        await apply(Decision(item_id="i1", kind=Kind.BOUNCE, actions=(act,), reason="t"), db.unit_of_work(), now)
        # Migration 0006: nor does one whose rows a consumer claimed to publish itself.
        other = Action(ActionType.SUPPRESS, "b@example.se", status="5.1.1", reason="user_unknown", hard=True)
        uow = db.unit_of_work()
        uow.claimed_until = now
        await apply(Decision(item_id="i2", kind=Kind.BOUNCE, actions=(other,), reason="t"), uow, now)
        assert len(uow.claimed_rows) == 1
        await asyncio.sleep(0.5)
        assert heard.empty()
    finally:
        if listener is not None:
            await listener.close()
        await db.close()
        await _drop_pg_database(name)
