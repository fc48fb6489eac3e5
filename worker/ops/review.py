"""The review queue: what unsubd did not decide confidently, for a person to settle.

Every resolution is an event of its own (kind admin, source review), written by
handlers.state.apply together with the item's resolution, in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from handlers.mail.addresses import normalise
from handlers.state.apply import Applied, Refused, apply
from handlers.events.operator import RESOLUTIONS, settle_review
from handlers.model import Scope
from worker.store.db import Database
from worker.store.models import ReviewItem


class ReviewError(ValueError):
    """The review item cannot be resolved as asked; the message says why."""


async def list_open(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """Open review items, those with a deadline first (earliest first), then oldest first."""
    async with db.sessions() as s:
        rows = (await s.scalars(select(ReviewItem).where(ReviewItem.resolved_at.is_(None))
                                .order_by(ReviewItem.due_at.is_(None), ReviewItem.due_at, ReviewItem.id)
                                .limit(limit))).all()
    return [{"id": r.id, "kind": r.kind, "address": r.address, "reason": r.reason, "event_id": r.event_id,
             "created_at": r.created_at.isoformat(), "due_at": r.due_at.isoformat() if r.due_at else None}
            for r in rows]


async def resolve(db: Database, review_id: int, resolution: str, now: datetime, *, units: Scope = "all",
                  channels: Scope = ("email",), address: str | None = None, note: str = "",
                  operator: str = "unknown") -> Applied:
    """Settle one review item as an opt-out (of `units` x `channels` for its address) or as nothing.

    The command is decided by handlers.events.operator.settle_review and written by
    handlers.state.apply with the item's resolution, in one transaction. Raises LookupError
    for an unknown id and ReviewError for one already resolved, an unknown resolution,
    or an opt-out with no address to act on.
    """
    if resolution not in RESOLUTIONS:
        raise ReviewError(f"resolve as one of {', '.join(RESOLUTIONS)}")
    async with db.sessions() as s:
        item = await s.get(ReviewItem, review_id)
    if item is None:
        raise LookupError(f"no review item {review_id}")
    if item.resolved_at is not None:
        raise ReviewError(f"review item {review_id} was already resolved as {item.resolution}")
    target = (normalise(address) if address else item.address) if resolution == "optout" else None
    try:
        decision = settle_review(review_id, resolution, target, operator, units=units, channels=channels,
                                 note=note, reviewed_event_id=item.event_id)
        applied = await apply(decision, db.unit_of_work(), now)
    except (ValueError, Refused) as exc:
        raise ReviewError(str(exc)) from None
    if applied.duplicate:
        raise ReviewError(f"review item {review_id} was already resolved")
    return applied
