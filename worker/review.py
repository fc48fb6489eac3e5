"""The review queue: what unsubd did not decide confidently, for a person to settle.

Every resolution is an event of its own (kind admin, source review); an opt-out
decided by a person goes through handlers.apply like any other decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from handlers.addresses import normalise
from handlers.apply import Applied, apply
from handlers.model import Action, ActionType, Decision, Kind, Scope
from worker.db import Database
from worker.models import ReviewItem

RESOLUTIONS = ("optout", "ignore")


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
                  channels: Scope = ("email",), address: str | None = None, note: str = "") -> Applied:
    """Settle one review item as an opt-out (of `units` x `channels` for its address) or as nothing.

    Raises LookupError for an unknown id and ReviewError for one already resolved, an
    unknown resolution, or an opt-out with no address to act on.
    """
    if resolution not in RESOLUTIONS:
        raise ReviewError(f"resolve as one of {', '.join(RESOLUTIONS)}")
    async with db.sessions() as s:
        item = await s.get(ReviewItem, review_id)
    if item is None:
        raise LookupError(f"no review item {review_id}")
    if item.resolved_at is not None:
        raise ReviewError(f"review item {review_id} was already resolved as {item.resolution}")
    actions: tuple[Action, ...] = ()
    if resolution == "optout":
        target = normalise(address) if address else item.address
        if not target:
            raise ReviewError("the item names no usable address: give --address")
        actions = (Action(ActionType.UNSUBSCRIBE, target, reason="optout", units=units, channels=channels),)
    decision = Decision(
        item_id=f"review:{review_id}", kind=Kind.ADMIN, source="review", actions=actions,
        reason=f"review {review_id} resolved as {resolution}" + (f": {note.strip()[:300]}" if note.strip() else ""),
        evidence={"review_id": review_id, "reviewed_event_id": item.event_id, "note": note.strip()[:2000]})
    applied = await apply(decision, db.unit_of_work(), now)
    async with db.transaction() as s:
        await s.execute(update(ReviewItem).where(ReviewItem.id == review_id, ReviewItem.resolved_at.is_(None))
                        .values(resolved_at=now, resolution=resolution, resolution_event_id=applied.event_id))
    return applied
