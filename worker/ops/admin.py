"""Operators' actions on suppressions: release one, export them all. Each release is an event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from handlers.mail.addresses import normalise
from handlers.state.apply import Applied, apply
from handlers.events import operator as operator_commands
from handlers.model import Scope
from worker.store.db import Database
from worker.store.models import Suppression


async def release(db: Database, raw_address: str, reason: str, now: datetime, operator: str = "unknown") -> Applied:
    """Lift the suppression of one address, recorded as an `admin` event with the operator and reason.

    Raises ValueError for something that is not an address, or no reason. Releasing an
    address that is not suppressed records the event and changes nothing.
    """
    address = normalise(raw_address)
    if address is None:
        raise ValueError(f"not an email address: {raw_address!r}")
    return await apply(operator_commands.release(address, reason, operator), db.unit_of_work(), now)


async def opt_in(db: Database, raw_address: str, units: Scope, channels: Scope, reason: str, now: datetime,
                 operator: str) -> Applied:
    """An operator opts an address back in (handlers.state.rules: needs the operator and a reason)."""
    address = normalise(raw_address)
    if address is None:
        raise ValueError(f"not an email address: {raw_address!r}")
    return await apply(operator_commands.opt_in(address, units, channels, reason, operator), db.unit_of_work(), now)


async def export_suppressions(db: Database) -> list[dict[str, Any]]:
    """Every active suppression, oldest first."""
    async with db.sessions() as s:
        rows = (await s.scalars(select(Suppression).where(Suppression.active.is_(True))
                                .order_by(Suppression.created_at, Suppression.id))).all()
    return [{"address": r.address, "reason": r.reason, "since": r.created_at.isoformat(), "contact_id": r.contact_id}
            for r in rows]
