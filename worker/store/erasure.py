"""Erasure as rows: what `SqlUnitOfWork.record` does for a plan's erasures (issue 23).

handlers.state.plan decides what to forget and what tombstone replaces it; this module
carries out, inside the decision's own transaction, exactly the rules of the personal-data
registry (worker.store.personal_data). `IMPLEMENTS` lists the (table, column, rule) it
carries out, and tests/unit/test_personal_data.py checks that it equals the registry's.

What concerns the person: the rows of their contact and addresses, the events whose
`event_address` names either (and the events of review items naming the address), the
received messages of those events and any message sent from the address, and the
updates about the contact. An event or message that also concerns someone else is
scrubbed of the address instead of emptied of evidence: the evidence about the other
person stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import bindparam, delete, func, insert, or_, select, update

from handlers.events.rights import redact_actions, scrub, scrub_json
from handlers.state.plan import Erasure
from worker.store.connection import WriteConn
from worker.store.models import (Address, Contact, Event, EventAddress, InboundItem, Membership, Outbox, Preference,
                                 ReviewItem, SoftBounce, Suppression, Tombstone)

IMPLEMENTS: frozenset[tuple[str, str, str]] = frozenset({
    ("contact", "name", "null"), ("contact", "recipient_id", "null"), ("contact", "origin", "anonymise"),
    *(("address", c, "delete") for c in ("id", "contact_id", "channel", "address", "created_at")),
    *(("preference", c, "delete") for c in ("id", "contact_id", "unit", "channel", "state", "reason", "source",
                                           "event_id", "changed_at")),
    *(("membership", c, "delete") for c in ("id", "contact_id", "unit", "source", "event_id", "joined_at")),
    *(("suppression", c, "delete") for c in ("id", "address", "contact_id", "reason", "active", "event_id",
                                            "created_at", "released_at")),
    ("event", "reason", "scrub"), ("event", "actions", "redact"), ("event", "evidence", "redact"),
    *(("event_address", c, "delete") for c in ("id", "event_id", "address", "contact_id")),
    ("inbound_item", "raw", "blank"), ("inbound_item", "mail_from", "null"), ("inbound_item", "rcpt_tos", "blank"),
    ("inbound_item", "last_error", "null"),
    ("outbox", "payload", "redact"),
    *(("soft_bounce", c, "delete") for c in ("id", "address", "ref", "status", "reason", "event_id", "occurred_at",
                                            "cleared_at")),
    ("review_item", "reason", "scrub"), ("review_item", "address", "null"),
})

_A = bindparam("addresses", expanding=True)
_C = bindparam("contacts", expanding=True)
_E = bindparam("events", expanding=True)
_T = {name: model.__table__ for name, model in (
    ("event", Event), ("inbound", InboundItem), ("review", ReviewItem), ("outbox", Outbox), ("contact", Contact),
    ("tombstone", Tombstone))}

EVENTS_OF = select(EventAddress.event_id).where(or_(EventAddress.address.in_(_A), EventAddress.contact_id.in_(_C)))
REVIEW_EVENTS_OF = select(ReviewItem.event_id).where(ReviewItem.address.in_(_A))
SHARED = (select(EventAddress.event_id).where(EventAddress.event_id.in_(_E), EventAddress.address.not_in(_A))
          .where(or_(EventAddress.contact_id.is_(None), EventAddress.contact_id.not_in(_C))))
EVENT_ROWS = select(Event.id, Event.item_id, Event.reason, Event.actions, Event.evidence).where(Event.id.in_(_E))
SET_EVENT = (update(_T["event"]).where(_T["event"].c.id == bindparam("b_id"))
             .values(reason=bindparam("b_reason"), actions=bindparam("b_actions", type_=Event.actions.type),
                     evidence=bindparam("b_evidence", type_=Event.evidence.type)))
# Received messages: those the person's events came from, and any sent from the address;
# not one still waiting for the consumer (it is handled first, and its event then erased
# by a later erasure or kept blocked by the tombstone).
ITEMS_OF = (select(InboundItem.id).where(InboundItem.status.in_(("done", "failed")))
            .where(or_(InboundItem.id.in_(bindparam("items", expanding=True)), func.lower(InboundItem.mail_from).in_(_A))))
BLANK_ITEMS = (update(_T["inbound"]).where(_T["inbound"].c.id.in_(bindparam("ids", expanding=True)))
               .values(raw=b"", mail_from=None, rcpt_tos=[], last_error=None))
REVIEWS_OF = (select(ReviewItem.id, ReviewItem.reason, ReviewItem.resolved_at)
              .where(or_(ReviewItem.address.in_(_A), ReviewItem.event_id.in_(_E))))
SET_REVIEW = (update(_T["review"]).where(_T["review"].c.id == bindparam("b_id"))
              .values(address=None, reason=bindparam("b_reason")))
CLOSE_REVIEW = (update(_T["review"]).where(_T["review"].c.id == bindparam("b_id"), _T["review"].c.resolved_at.is_(None))
                .values(resolved_at=bindparam("b_now"), resolution="erased", resolution_event_id=bindparam("b_event")))
OUTBOX_OF = select(Outbox.id, Outbox.payload).where(Outbox.contact_id.in_(_C))
SET_OUTBOX = (update(_T["outbox"]).where(_T["outbox"].c.id == bindparam("b_id"))
              .values(payload=bindparam("b_payload", type_=Outbox.payload.type)))
DELETES = (
    delete(EventAddress).where(or_(EventAddress.address.in_(_A), EventAddress.contact_id.in_(_C))),
    delete(SoftBounce).where(SoftBounce.address.in_(_A)),
    delete(Suppression).where(or_(Suppression.address.in_(_A), Suppression.contact_id.in_(_C))),
    delete(Preference).where(Preference.contact_id.in_(_C)),
    delete(Membership).where(Membership.contact_id.in_(_C)),
    delete(Address).where(or_(Address.address.in_(_A), Address.contact_id.in_(_C))),
)
ANONYMISE = (update(_T["contact"]).where(_T["contact"].c.id.in_(_C))
             .values(name=None, recipient_id=None, origin="erased", updated_at=bindparam("b_now")))
TOMBSTONE_EXISTS = select(Tombstone.digest).where(Tombstone.digest.in_(bindparam("digests", expanding=True)))
NEW_TOMBSTONE = insert(_T["tombstone"])
SET_TOMBSTONE = (update(_T["tombstone"]).where(_T["tombstone"].c.digest == bindparam("b_digest"))
                 .values(optouts=bindparam("b_optouts", type_=Tombstone.optouts.type),
                         suppression=bindparam("b_suppression"), event_id=bindparam("b_event"),
                         erased_at=bindparam("b_now")))


async def erase_rows(conn: WriteConn, erasures: Sequence[Erasure], event_id: str, now: datetime) -> dict[str, int]:
    """Forget the erasures' addresses in every table, and write their tombstones. Returns counts per table."""
    addresses = list(dict.fromkeys(e.address for e in erasures))
    contacts = sorted({e.contact_id for e in erasures if e.contact_id is not None})
    digest_of = {e.address: e.digest for e in erasures}
    keys = {"addresses": addresses, "contacts": contacts}
    events = set((await conn.execute(EVENTS_OF, keys)).scalars())
    events |= set((await conn.execute(REVIEW_EVENTS_OF, keys)).scalars())
    events.discard(event_id)
    ev = sorted(events)
    counts: dict[str, int] = {}
    shared = set((await conn.execute(SHARED, {**keys, "events": ev})).scalars()) if ev else set()
    rows = (await conn.execute(EVENT_ROWS, {"events": ev})).all() if ev else []
    item_ids = [row[1] for row in rows]
    changed = [{"b_id": eid, "b_reason": scrub(reason or "", addresses),
                "b_actions": redact_actions(actions, addresses),
                "b_evidence": scrub_json(evidence, addresses) if eid in shared
                else {"erased": True, "erasure_event_id": event_id}}
               for eid, _item, reason, actions, evidence in rows]
    if changed:
        await conn.execute(SET_EVENT, changed)
    counts["event"] = len(changed)
    items = list((await conn.execute(ITEMS_OF, {"addresses": addresses, "items": item_ids})).scalars())
    if items:
        await conn.execute(BLANK_ITEMS, {"ids": items})
    counts["inbound_item"] = len(items)
    reviews = (await conn.execute(REVIEWS_OF, {"addresses": addresses, "events": ev})).all()
    if reviews:
        await conn.execute(SET_REVIEW, [{"b_id": rid, "b_reason": scrub(reason or "", addresses)}
                                        for rid, reason, _ in reviews])
        open_ = [{"b_id": rid, "b_now": now, "b_event": event_id} for rid, _, resolved in reviews if resolved is None]
        if open_:
            await conn.execute(CLOSE_REVIEW, open_)
    counts["review_item"] = len(reviews)
    outbox = []
    for oid, payload in (await conn.execute(OUTBOX_OF, {"contacts": contacts})).all() if contacts else []:
        new = _redact_payload(payload, addresses, digest_of)
        if new != payload:
            outbox.append({"b_id": oid, "b_payload": new})
    if outbox:
        await conn.execute(SET_OUTBOX, outbox)
    counts["outbox"] = len(outbox)
    for statement in DELETES:
        await conn.execute(statement, keys)
    if contacts:
        await conn.execute(ANONYMISE, {"contacts": contacts, "b_now": now})
    counts["contact"] = len(contacts)
    existing = set((await conn.execute(TOMBSTONE_EXISTS, {"digests": list(digest_of.values())})).scalars())
    fresh = [{"digest": e.digest, "key_id": e.key_id, "optouts": [list(o) for o in e.optouts],
              "suppression": e.suppression, "event_id": event_id, "erased_at": now}
             for e in erasures if e.digest not in existing]
    if fresh:
        await conn.execute(NEW_TOMBSTONE, fresh)
    again = [{"b_digest": e.digest, "b_optouts": [list(o) for o in e.optouts], "b_suppression": e.suppression,
              "b_event": event_id, "b_now": now} for e in erasures if e.digest in existing]
    if again:
        await conn.execute(SET_TOMBSTONE, again)
    counts["tombstone"] = len(erasures)
    return counts


def _redact_payload(payload: Any, addresses: Sequence[str], digest_of: dict[str, str]) -> Any:
    """An update's payload with the erased address replaced by its tombstone digest."""
    if not isinstance(payload, dict):
        return scrub_json(payload, addresses)
    new = dict(payload)
    address = new.get("address")
    if isinstance(address, str) and address.lower() in digest_of:
        new["address"] = None
        new["address_hash"] = digest_of[address.lower()]
    for key in ("old_address", "new_address"):          # contact.address_changed (rectification)
        value = new.get(key)
        if isinstance(value, str) and value.lower() in digest_of:
            new[key] = None
    return scrub_json(new, addresses)
