"""The configured units, mirrored into the `unit` table at start (the settings are the source)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from config.settings import Settings
from worker.store.db import Database
from worker.store.models import Unit


async def sync_units(settings: Settings, db: Database, now: datetime) -> None:
    """Mirror the configured units into the `unit` table (the settings are the source)."""
    if not settings.units:
        return
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    async with db.transaction() as s:
        for unit in settings.units.values():
            values = {"key": unit.key, "name_sv": unit.names.sv, "name_nb": unit.names.nb,
                      "name_en": unit.names.en, "updated_at": now}
            stmt = insert(Unit).values(**values)
            await s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=values))
