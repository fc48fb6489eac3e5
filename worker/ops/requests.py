"""Rights requests as work with a deadline (issue 23, item 6): list the open ones, fulfil one.

A rights item is a review item of kind `rights_request`, opened when a reply asks for
access, erasure, rectification or objection (handlers.replies.rights), due one calendar
month after the message was received (GDPR Art. 12(3)). Its type is the first words of
its reason (handlers.replies.rights.item_reason); items written before that carry it
in their event's `rights_request` evidence.

Fulfilling one does what the request asks, then closes the item, each through apply:

* access: the export of worker.ops.rights (JSON and a summary) is handed to `deliver`
  (the CLI writes it to a file or stdout); only then is the item closed;
* erasure: worker.ops.rights.erase, with a reason naming the request; the erasure
  closes every open item about the address in its own transaction (resolution
  `erased`). It is refused while an access request of the same address is open,
  since the erasure would close that one unanswered;
* objection: the opt-out of every unit and channel and the closing, in one
  transaction (no new row when the opt-out is already in effect);
* rectification: needs the corrected address; worker.ops.rights.change_address
  moves the contact to it, then the item is closed.

Days left count calendar days in UTC: 0 on the due day, negative once it has passed
(overdue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from sqlalchemy import case, func, select

from config import Settings
from handlers.events.requests import FULFILLED, fulfil as fulfil_command
from handlers.replies.rights import rights_type
from handlers.state.apply import Applied, Refused, apply
from worker.ops import rights as rights_ops
from worker.store.db import Database
from worker.store.models import Event, ReviewItem

RIGHTS = "rights_request"

Deliver = Callable[[dict[str, Any]], None]


class RequestError(ValueError):
    """The rights item cannot be fulfilled as asked (not a rights item, already closed, a missing
    value); the message says why. Nothing was written."""


@dataclass(frozen=True)
class RightsItem:
    id: int
    type: str | None
    address: str | None
    created_at: datetime
    due_at: datetime | None
    days_left: int | None
    event_id: str
    reason: str

    @property
    def overdue(self) -> bool:
        return self.days_left is not None and self.days_left < 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "address": self.address,
                "created_at": self.created_at.isoformat(),
                "due": self.due_at.date().isoformat() if self.due_at else None,
                "days_left": self.days_left, "overdue": self.overdue, "event_id": self.event_id,
                "reason": self.reason}


def days_left(due_at: datetime | None, now: datetime) -> int | None:
    """Calendar days (UTC) from `now` to the due day: 0 on the day, negative when overdue."""
    if due_at is None:
        return None
    return (due_at.astimezone(timezone.utc).date() - now.astimezone(timezone.utc).date()).days


def _start_of_day(now: datetime) -> datetime:
    day = now.astimezone(timezone.utc).date()
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


async def _type_of(db: Database, items: list[ReviewItem]) -> dict[int, str | None]:
    """Each item's type: from its reason, else from its event's `rights_request` evidence."""
    out = {item.id: rights_type(item.reason) for item in items}
    missing = {item.event_id for item in items if out[item.id] is None}
    if missing:
        async with db.sessions() as s:
            evidence = dict((await s.execute(select(Event.id, Event.evidence).where(Event.id.in_(missing)))).all())
        for item in items:
            found = evidence.get(item.event_id)
            rights = found.get("rights_request") if isinstance(found, Mapping) else None
            if out[item.id] is None and isinstance(rights, Mapping) and isinstance(rights.get("type"), str):
                out[item.id] = rights["type"]
    return out


def _item(row: ReviewItem, kind: str | None, now: datetime) -> RightsItem:
    return RightsItem(id=row.id, type=kind, address=row.address, created_at=row.created_at, due_at=row.due_at,
                      days_left=days_left(row.due_at, now), event_id=row.event_id, reason=row.reason)


async def list_open(db: Database, now: datetime, *, overdue: bool = False, limit: int = 1000) -> list[RightsItem]:
    """Open rights items, the earliest due first (items without a due date last, then by id).
    With `overdue`, only those whose due day has passed."""
    query = select(ReviewItem).where(ReviewItem.kind == RIGHTS, ReviewItem.resolved_at.is_(None))
    if overdue:
        query = query.where(ReviewItem.due_at < _start_of_day(now))
    query = query.order_by(ReviewItem.due_at.is_(None), ReviewItem.due_at, ReviewItem.id).limit(limit)
    async with db.sessions() as s:
        rows = list((await s.scalars(query)).all())
    kinds = await _type_of(db, rows)
    return [_item(r, kinds[r.id], now) for r in rows]


async def counts(db: Database, now: datetime) -> tuple[int, int]:
    """(open, overdue) rights items, in one query."""
    overdue = func.coalesce(func.sum(case((ReviewItem.due_at < _start_of_day(now), 1), else_=0)), 0)
    async with db.sessions() as s:
        row = (await s.execute(select(func.count(), overdue).where(
            ReviewItem.kind == RIGHTS, ReviewItem.resolved_at.is_(None)))).one()
    return int(row[0]), int(row[1])


@dataclass
class Fulfilled:
    item: RightsItem
    resolution: str                       # fulfilled, or erased (closed by the erasure itself)
    done: str                             # what was done, in words
    applied: list[Applied] = field(default_factory=list)


async def fulfil(db: Database, settings: Settings, review_id: int, now: datetime, *, operator: str,
                 note: str = "", new_address: str | None = None, deliver: Deliver | None = None) -> Fulfilled:
    """Do what rights item `review_id` asks and close it (see the module docstring).

    Raises LookupError for an unknown id, and RequestError for an item that is not a
    rights item, is already closed, names no address, or (rectification) lacks
    `new_address`; nothing is written then. An access request needs `deliver`, which
    gets {"request": ..., "export": ..., "summary": ...} before the item is closed.
    """
    async with db.sessions() as s:
        row = await s.get(ReviewItem, review_id)
    if row is None:
        raise LookupError(f"no rights item {review_id}")
    if row.kind != RIGHTS:
        raise RequestError(f"review item {review_id} is not a rights request (it is a {row.kind} item): "
                           "settle it with `unsubd review resolve`")
    if row.resolved_at is not None:
        raise RequestError(f"rights item {review_id} was already fulfilled ({row.resolution}, "
                           f"{row.resolved_at.isoformat()[:16]})")
    kind = (await _type_of(db, [row]))[row.id]
    item = _item(row, kind, now)
    if kind is None:
        raise RequestError(f"rights item {review_id} does not say what is asked: "
                           "settle it with `unsubd review resolve`")
    if not row.address:
        raise RequestError(f"rights item {review_id} names no address: nothing can be done for it here; "
                           "settle it with `unsubd review resolve`")
    if kind == "rectification" and not (new_address or "").strip():
        raise RequestError("a rectification request needs --new-address (the corrected address); a correction "
                           "of anything else is done by hand and the item settled with `unsubd review resolve`")
    if kind == "access" and deliver is None:
        raise RequestError("an access request needs somewhere to write the export")
    rights_ops.tombstone_keys(db, settings)     # so that apply finds tombstones, as the worker's does
    what = f"rights request {review_id} ({kind}, received {row.created_at.date().isoformat()})"
    if kind == "erasure":
        return await _erase(db, settings, item, now, operator, note, what)
    applied: list[Applied] = []
    done = ""
    if kind == "access":
        data = await rights_ops.export(db, settings, row.address)
        text = rights_ops.summary(data) if data is not None else f"We hold nothing about {row.address}."
        assert deliver is not None
        deliver({"request": item.to_json(), "export": data, "summary": text})
        done = "export delivered" if data is not None else "nothing held; said so"
    elif kind == "rectification":
        done = await _rectify(db, settings, item, (new_address or "").strip(), now, operator, note, what, applied)
    elif kind == "objection":
        done = "opt-out of every unit and channel in effect"
    decision = fulfil_command(review_id, kind, row.address, operator, note=note, done=done,
                              reviewed_event_id=row.event_id)
    closed = await _apply(db, decision, now, review_id)
    if kind == "objection":
        done = "opted out of every unit and channel" if closed.updates else \
            "the opt-out of every unit and channel was already in effect"
    applied.append(closed)
    return Fulfilled(item=item, resolution=FULFILLED, done=done, applied=applied)


async def _apply(db: Database, decision: Any, now: datetime, review_id: int) -> Applied:
    try:
        applied = await apply(decision, db.unit_of_work(), now)
    except (Refused, ValueError) as exc:
        raise RequestError(str(exc)) from None
    if applied.duplicate:
        raise RequestError(f"rights item {review_id} was already fulfilled")
    return applied


async def _erase(db: Database, settings: Settings, item: RightsItem, now: datetime, operator: str, note: str,
                 what: str) -> Fulfilled:
    async with db.sessions() as s:
        others = list((await s.scalars(select(ReviewItem).where(
            ReviewItem.kind == RIGHTS, ReviewItem.resolved_at.is_(None), ReviewItem.address == item.address,
            ReviewItem.id != item.id))).all())
    kinds = await _type_of(db, others)
    waiting = [o.id for o in others if kinds[o.id] == "access"]
    if waiting:
        raise RequestError(f"answer the access request first (rights item {', '.join(map(str, waiting))}): "
                           "the erasure would close it unanswered")
    reason = what + (f": {note.strip()}" if note.strip() else "")
    try:
        erased = await rights_ops.erase(db, settings, item.address or "", reason, now, operator)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    applied = [erased.applied] if erased is not None and erased.applied is not None else []
    async with db.sessions() as s:
        row = await s.get(ReviewItem, item.id)
    if row is not None and row.resolved_at is not None:
        return Fulfilled(item=item, resolution=row.resolution or "erased",
                         done=f"erased ({erased.addresses if erased else 0} address(es)); opt-outs kept as tombstones",
                         applied=applied)
    # Nothing was held to erase (or the erasure did not reach the item): closed on its own.
    decision = fulfil_command(item.id, "erasure", item.address, operator, note=note,
                              done="nothing held to erase", reviewed_event_id=item.event_id)
    applied.append(await _apply(db, decision, now, item.id))
    return Fulfilled(item=item, resolution=FULFILLED, done="nothing held to erase", applied=applied)


async def _rectify(db: Database, settings: Settings, item: RightsItem, new_address: str, now: datetime,
                   operator: str, note: str, what: str, applied: list[Applied]) -> str:
    change = getattr(rights_ops, "change_address", None)
    if change is None:
        return f"change of address to be made by hand (no change-address operation): {new_address}"
    reason = what + (f": {note.strip()}" if note.strip() else "")
    try:
        changed = await change(db, settings, item.address or "", new_address, reason, now, operator)
    except ValueError as exc:         # not an address, the same address, or AddressConflict (a ValueError)
        raise RequestError(str(exc)) from None
    if changed is None:
        raise RequestError(f"no contact has the address {item.address}: nothing to correct")
    if getattr(changed, "applied", None) is not None:
        applied.append(changed.applied)
    return "address corrected"
