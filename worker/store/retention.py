"""Retention as rows: what `SqlUnitOfWork.record` does for a plan's `retention` (issue 23, item 5).

handlers.events.retention decides which rows are past their period and handlers.state.plan
turns the command into `RowRetention`s; this module carries them out inside the command's
own transaction, exactly as the personal-data registry's `retain` rules say
(worker.store.personal_data; tests/unit/test_personal_data.py checks `IMPLEMENTS`
against `retention_rules()`). Contacts past their period are erased by worker.store.erasure.

Each statement checks again what the command was decided on, so that a row that changed
since it was read is left alone: only a resolved review item is deleted, only a handled
message is blanked, and an event that some row refers to (now) is emptied, never deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from sqlalchemy import bindparam, delete, func, select, union, update

from handlers.events.retention import MARKER
from handlers.state.plan import RowRetention
from worker.store.connection import WriteConn
from worker.store.models import (Event, EventAddress, InboundItem, Membership, Outbox, Preference, ReviewItem,
                                 SoftBounce, Suppression, Tombstone)

IMPLEMENTS: frozenset[tuple[str, str, str]] = frozenset({
    ("inbound_item", "raw", "raw_mail"), ("inbound_item", "mail_from", "raw_mail"),
    ("inbound_item", "last_error", "raw_mail"),
    ("event", "reason", "evidence"), ("event", "evidence", "evidence"),
    *(("event", c.name, "events") for c in Event.__table__.columns),
    *(("event_address", c.name, "events") for c in EventAddress.__table__.columns),
    *(("review_item", c.name, "review_items") for c in ReviewItem.__table__.columns),
})

_IDS = bindparam("ids", expanding=True)
_EVENT = Event.__table__
HANDLED = (select(InboundItem.id).where(InboundItem.id.in_(_IDS), InboundItem.status.in_(("done", "failed")),
                                        func.length(InboundItem.raw) > 0))
BLANK = (update(InboundItem.__table__).where(InboundItem.__table__.c.id.in_(_IDS))
         .values(raw=b"", mail_from=None, last_error=None))
# Every row that refers to an event: while one does, the event stays (emptied at most).
REFERENCED = union(*(select(col).where(col.in_(_IDS)) for col in (
    Preference.event_id, Membership.event_id, Suppression.event_id, SoftBounce.event_id, Outbox.event_id,
    Tombstone.event_id, ReviewItem.event_id, ReviewItem.resolution_event_id)))
EXISTING = select(Event.id).where(Event.id.in_(_IDS))
EMPTY = (update(_EVENT).where(_EVENT.c.id.in_(_IDS))
         .values(reason=bindparam("b_reason"), evidence=bindparam("b_evidence", type_=Event.evidence.type)))
DELETE_EVENT_ADDRESSES = delete(EventAddress).where(EventAddress.event_id.in_(_IDS))
DELETE_EVENTS = delete(Event).where(Event.id.in_(_IDS))
RESOLVED = select(ReviewItem.id).where(ReviewItem.id.in_(_IDS), ReviewItem.resolved_at.is_not(None))
DELETE_REVIEWS = delete(ReviewItem).where(ReviewItem.id.in_(_IDS))


async def retain_rows(conn: WriteConn, changes: Sequence[RowRetention], event_id: str,
                      now: datetime) -> dict[str, int]:
    """Carry out the changes. Returns counts: `<table>.<rule>` (rows changed) and `event.kept`
    (events asked to be deleted that a row refers to, emptied instead)."""
    counts: dict[str, int] = {}
    for change in changes:
        ids = [i for i in change.ids if i is not None]
        if not ids:
            continue
        key = f"{change.table}.{change.rule}"
        if (change.table, change.rule) == ("inbound_item", "blank"):
            found = list((await conn.execute(HANDLED, {"ids": ids})).scalars())
            if found:
                await conn.execute(BLANK, {"ids": found})
        elif (change.table, change.rule) == ("review_item", "delete"):
            found = list((await conn.execute(RESOLVED, {"ids": [int(i) for i in ids]})).scalars())
            if found:
                await conn.execute(DELETE_REVIEWS, {"ids": found})
        elif change.table == "event" and change.rule in ("delete", "empty"):
            found = [i for i in (await conn.execute(EXISTING, {"ids": ids})).scalars() if i != event_id]
            empty = found
            if change.rule == "delete" and found:
                referenced = set((await conn.execute(REFERENCED, {"ids": found})).scalars())
                gone = [i for i in found if i not in referenced]
                empty = [i for i in found if i in referenced]
                if gone:
                    await conn.execute(DELETE_EVENT_ADDRESSES, {"ids": gone})
                    await conn.execute(DELETE_EVENTS, {"ids": gone})
                counts[key] = counts.get(key, 0) + len(gone)
                counts["event.kept"] = counts.get("event.kept", 0) + len(empty)
                found = gone
            if empty:
                await conn.execute(EMPTY, {"ids": empty, "b_reason": MARKER,
                                           "b_evidence": {"removed": "retention", "retention_event_id": event_id,
                                                          "at": now.isoformat()}})
            if change.rule == "delete":
                continue
        else:
            raise ValueError(f"no retention rule {key}")
        counts[key] = counts.get(key, 0) + len(found)
    return counts
