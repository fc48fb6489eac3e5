"""The statements a unit of work runs, built once: the reads of state (with their PostgreSQL
forms), the inserts and upserts of every table it writes, in the order a flush makes them,
and the updates it holds.

Building SQLAlchemy expressions per call cost more than running them. Lists are bound as
expanding parameters; the statements of a decision's own transaction have a PostgreSQL
form (key True) that binds them as one array instead (among), so that their SQL, and the
statement asyncpg prepares, is the same whatever the list's length.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text, any_, bindparam, cast, func, insert, literal, select, union_all, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from worker.store.models import (Address, Contact, Event, EventAddress, Membership, Outbox, Preference, ReviewItem,
                                 SoftBounce, Suppression, Tombstone, UtcDateTime)


def among(column: Any, name: str, pg: bool) -> Any:
    """`column` is one of the list parameter `name`: `= ANY(array)` on PostgreSQL, an
    expanding IN elsewhere."""
    if pg:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


EVENTS_EXISTING = {pg: select(Event.item_id).where(among(Event.item_id, "item_ids", pg)) for pg in (False, True)}
RECENT_UNVERIFIED = select(func.count()).select_from(Event).where(
    Event.kind == "optout", Event.verified.is_(False), Event.review.is_(False),
    Event.occurred_at >= bindparam("since"))
RECIPIENT_IDS = select(Contact.recipient_id, Contact.id).where(Contact.recipient_id.in_(bindparam("rids", expanding=True)))
CONTACT_ADDRESSES = (select(Address.contact_id, Address.address)
                     .where(Address.contact_id.in_(bindparam("ids", expanding=True)), Address.channel == "email")
                     .order_by(Address.id))
# A contact and its preference rows in one query; the lock serialises sequence numbers
# per contact (PostgreSQL; SQLite has one writer anyway).
STATE_CONTACTS = {pg: (select(Address.address, Contact.id, Contact.seq, Preference.unit, Preference.channel,
                              Preference.state, Preference.changed_at)
                       .join(Contact, Contact.id == Address.contact_id)
                       .outerjoin(Preference, Preference.contact_id == Contact.id)
                       .where(among(Address.address, "addresses", pg))
                       .order_by(Contact.id)      # locks taken in one order by every transaction: no deadlock
                       .with_for_update(of=Contact))
                  for pg in (False, True)}


def _marks(pg: bool) -> tuple[Any, ...]:
    """Open soft bounces (oldest first) and active suppressions of the addresses, in one query."""
    return (
        select(literal("soft").label("mark"), SoftBounce.address, SoftBounce.ref.label("detail"),
               SoftBounce.occurred_at.label("at"))
        .where(among(SoftBounce.address, "addresses", pg),
               SoftBounce.cleared_at.is_(None), SoftBounce.occurred_at >= bindparam("since")),
        select(literal("suppressed"), Suppression.address, Suppression.reason, literal(None, UtcDateTime()))
        .where(among(Suppression.address, "addresses", pg), Suppression.active.is_(True)),
    )


# PostgreSQL also reserves, from contact.id's own sequence, an id for each address that
# has no contact yet, so a new contact can be written with the transaction's other rows
# instead of in a round trip of its own. An id left unused is a gap in the sequence.
_UNKNOWN = func.unnest(bindparam("addresses", type_=ARRAY(Text()))).table_valued("address").render_derived("unknown")
_NEW_CONTACT_IDS = (
    select(literal("new_contact"), _UNKNOWN.c.address,
           cast(func.nextval(func.pg_get_serial_sequence("contact", "id")), Text()), literal(None, UtcDateTime()))
    .where(~select(Address.id).where(Address.address == _UNKNOWN.c.address).exists()))
# The read ahead also answers the dedupe check: which of the batch's items have an event.
_EVENT_MARKS = {pg: select(literal("event"), Event.item_id, literal(None, String()), literal(None, UtcDateTime()))
                .where(among(Event.item_id, "item_ids", pg)) for pg in (False, True)}
# (PostgreSQL?, with the dedupe check?) -> the marks query
MARKS_QUERIES = {(pg, events): union_all(*_marks(pg), *([_NEW_CONTACT_IDS] if pg else []),
                                         *([_EVENT_MARKS[pg]] if events else [])).order_by("at")
                 for pg in (False, True) for events in (False, True)}
ADDRESS_CONTACTS = select(Address.address, Address.contact_id).where(
    Address.address.in_(bindparam("addresses", expanding=True)))
_T_EVENT, _T_EVENT_ADDRESS, _T_REVIEW, _T_SOFT, _T_OUTBOX, _T_CONTACT, _T_ADDRESS = (
    Event.__table__, EventAddress.__table__, ReviewItem.__table__, SoftBounce.__table__, Outbox.__table__,
    Contact.__table__, Address.__table__)
NEW_CONTACT = insert(_T_CONTACT).returning(_T_CONTACT.c.id)
CONTACT_SEQ = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
               .values(seq=bindparam("b_seq"), updated_at=bindparam("b_now")))
CLEAR_SOFT = (update(_T_SOFT).where(_T_SOFT.c.address.in_(bindparam("addresses", expanding=True)),
                                    _T_SOFT.c.cleared_at.is_(None))
              .values(cleared_at=bindparam("b_now")))
RELEASE = (update(Suppression.__table__)
           .where(Suppression.__table__.c.address.in_(bindparam("addresses", expanding=True)),
                  Suppression.__table__.c.active.is_(True))
           .values(active=False, released_at=bindparam("b_now"), event_id=bindparam("b_event_id")))


# What an import reads and writes beyond the consent state (JOIN actions; handlers.state.plan._plan_join).
PROFILES = (select(Address.address, Contact.name, Contact.recipient_id, Membership.unit)
            .join(Contact, Contact.id == Address.contact_id)
            .outerjoin(Membership, Membership.contact_id == Contact.id)
            .where(Address.address.in_(bindparam("addresses", expanding=True))))
JOIN = insert(Membership.__table__)
PROFILE_NAME = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
                .values(name=bindparam("b_name"), updated_at=bindparam("b_now")))
PROFILE_RID = (update(_T_CONTACT).where(_T_CONTACT.c.id == bindparam("b_id"))
               .values(recipient_id=bindparam("b_rid"), updated_at=bindparam("b_now")))
TOMBSTONES = select(Tombstone.digest, Tombstone.key_id, Tombstone.optouts, Tombstone.suppression,
                    Tombstone.erased_at).where(Tombstone.digest.in_(bindparam("digests", expanding=True)))
REVIEW_STATE = select(ReviewItem.id, ReviewItem.resolution, ReviewItem.resolved_at).where(
    ReviewItem.id == bindparam("b_id"))
SETTLE = (update(_T_REVIEW).where(_T_REVIEW.c.id == bindparam("b_id"), _T_REVIEW.c.resolved_at.is_(None))
          .values(resolved_at=bindparam("b_now"), resolution=bindparam("b_resolution"),
                  resolution_event_id=bindparam("b_event_id")))


def on_conflict(table: Any, stmt: Any) -> Any:
    """`stmt` (an INSERT into a suppression or preference table) as an upsert: a
    suppression by address, a preference by scope; the new row's values win."""
    ex = stmt.excluded
    if table is SoftBounce.__table__:
        # The same message reported again after the address was cleared (it showed a sign
        # of life, or was released) counts again: the row is revived, not a second one.
        return stmt.on_conflict_do_update(index_elements=["address", "ref"], set_={
            "status": ex.status, "reason": ex.reason, "event_id": ex.event_id, "occurred_at": ex.occurred_at,
            "cleared_at": None})
    if table is Suppression.__table__:
        return stmt.on_conflict_do_update(index_elements=["address"], set_={
            "active": True, "reason": ex.reason, "event_id": ex.event_id, "created_at": ex.created_at,
            "released_at": None})
    return stmt.on_conflict_do_update(index_elements=["contact_id", "unit", "channel"], set_={
        "state": ex.state, "reason": ex.reason, "source": ex.source, "event_id": ex.event_id,
        "changed_at": ex.changed_at})


def _upserts(dialect: str) -> tuple[Any, Any]:
    """INSERT ... ON CONFLICT DO UPDATE for suppressions (by address), preferences (by scope) and
    soft bounces (by address and bounced message)."""
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    return (on_conflict(Suppression.__table__, ins(Suppression.__table__)),
            on_conflict(Preference.__table__, ins(Preference.__table__)),
            on_conflict(SoftBounce.__table__, ins(SoftBounce.__table__)))


_UPSERTS = {name: _upserts(name) for name in ("postgresql", "sqlite")}
# The writes a unit of work holds until its next read or its commit, in the order they
# are then made. First the new rows, each table after the tables it refers to; then
# the updates, which must see the rows inserted before them (a delivery report clears
# the soft bounce counted just before it). Between two flushes no two decisions touch
# one address or contact (see SqlUnitOfWork), so only each decision's own order counts.
INSERT_SLOTS: dict[str, Any] = {
    "event": _T_EVENT, "contact": _T_CONTACT, "address": _T_ADDRESS, "suppression": Suppression.__table__,
    "soft_bounce": _T_SOFT, "preference": Preference.__table__, "review": _T_REVIEW,
    "event_address": _T_EVENT_ADDRESS, "outbox": _T_OUTBOX,
}
UPDATE_SLOTS = ("updates", "contact_seq")    # (statement, params) pairs; contact sequence rows
# SQLite: a statement per slot, run as an executemany (PostgreSQL uses pg_insert_all).
SQLITE_INSERTS: dict[str, Any] = {**{slot: insert(table) for slot, table in INSERT_SLOTS.items()},
                                  "suppression": _UPSERTS["sqlite"][0], "preference": _UPSERTS["sqlite"][1],
                                  "soft_bounce": _UPSERTS["sqlite"][2]}
