"""Operators' actions on suppressions: release one, export them all. Each release is an event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from handlers.addresses import normalise
from handlers.apply import Applied, apply
from handlers.model import Action, ActionType, Decision, Kind
from worker.db import Database
from worker.models import Suppression


async def release(db: Database, raw_address: str, reason: str, now: datetime) -> Applied:
    """Lift the suppression of one address, recorded as an `admin` event with the reason given.

    Raises ValueError for something that is not an address. Releasing an address that
    is not suppressed records the event and changes nothing.
    """
    address = normalise(raw_address)
    if address is None:
        raise ValueError(f"not an email address: {raw_address!r}")
    if not reason.strip():
        raise ValueError("a release needs a reason (it is kept as evidence)")
    decision = Decision(item_id=f"admin:{uuid.uuid4()}", kind=Kind.ADMIN, source="admin", verified=True,
                        reason=f"suppression released by an operator: {reason.strip()[:500]}",
                        actions=(Action(ActionType.RELEASE, address, reason=reason.strip()[:64]),),
                        evidence={"operator_reason": reason.strip()[:2000]})
    return await apply(decision, db.unit_of_work(), now)


async def export_suppressions(db: Database) -> list[dict[str, Any]]:
    """Every active suppression, oldest first."""
    async with db.sessions() as s:
        rows = (await s.scalars(select(Suppression).where(Suppression.active.is_(True))
                                .order_by(Suppression.created_at, Suppression.id))).all()
    return [{"address": r.address, "reason": r.reason, "since": r.created_at.isoformat(), "contact_id": r.contact_id}
            for r in rows]
