"""Data-subject rights for operators: access (export everything held about an address) and
erasure that keeps "no" (issue 23).

Export only reads. Erasure is a command decided in handlers.events.rights and written by
handlers.state.apply in one transaction (event + tombstone + erasure of the rows + the
`contact.erased` update); the rows it changes are listed in worker.store.personal_data.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from config import Settings
from handlers.events import rectify as rectify_commands
from handlers.events import rights as rights_commands
from handlers.mail.addresses import normalise
from handlers.model import State
from handlers.state.apply import Applied, Refused, apply
from handlers.state.plan import NEW_ERASED, NEW_TAKEN, OLD_UNKNOWN, PreferenceRow, effective_state
from handlers.tokens import Keyring
from worker.store.db import Database
from worker.store.keys import keyring_for
from worker.store.models import (Address, Contact, Event, EventAddress, InboundItem, Membership, Outbox, Preference,
                                 ReviewItem, SoftBounce, Suppression, Tombstone)
from worker.store.personal_data import personal_fields

MAX_RAW_EXPORT = 1024 * 1024          # a received message larger than this is exported cut, and says so


def _address(raw_address: str) -> str:
    address = normalise(raw_address)
    if address is None:
        raise ValueError(f"not an email address: {raw_address[:100]!r}")
    return address


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(obj, column.key)
        out[column.key] = _iso(value) if isinstance(value, datetime) else value
    return out


def _raw_text(raw: bytes) -> dict[str, Any]:
    cut = raw[:MAX_RAW_EXPORT]
    try:
        return {"raw": cut.decode("utf-8"), "raw_encoding": "utf-8", "truncated": len(raw) > len(cut)}
    except UnicodeDecodeError:
        return {"raw": base64.b64encode(cut).decode("ascii"), "raw_encoding": "base64",
                "truncated": len(raw) > len(cut)}


def tombstone_keys(db: Database, settings: Settings) -> Keyring | None:
    """The keys tombstones are made and found with (the token keyring), remembered on `db`."""
    if db.tombstone_keys is None:
        db.tombstone_keys = keyring_for(settings)
    return db.tombstone_keys


async def find_tombstone(db: Database, keys: Keyring | None, address: str) -> Tombstone | None:
    if keys is None:
        return None
    digests = list(rights_commands.all_digests(keys, address))
    async with db.sessions() as s:
        return await s.scalar(select(Tombstone).where(Tombstone.digest.in_(digests)).limit(1))


async def export(db: Database, settings: Settings, raw_address: str) -> dict[str, Any] | None:
    """Everything held about the address and its contact, as JSON-able data (GDPR Art. 15), or
    None when nothing is held. Raises ValueError for something that is not an address.

    Keys are the tables of worker.store.personal_data that hold data about a person, plus
    `effective` (the consent state today) and `erased` (whether a tombstone blocks the address).
    """
    address = _address(raw_address)
    keys = tombstone_keys(db, settings)
    async with db.sessions() as s:
        found = await s.scalar(select(Address).where(Address.address == address))
        contact = await s.get(Contact, found.contact_id) if found is not None else None
        contact_id = contact.id if contact is not None else None
        addresses = [address]
        former: list[str] = []
        if contact_id is not None:
            addresses = list((await s.scalars(select(Address.address).where(Address.contact_id == contact_id)
                                              .order_by(Address.id))).all()) or [address]
            former = await _former_addresses(s, contact_id, addresses)
        out: dict[str, Any] = {"address": address, "contact": _row(contact) if contact else None,
                               "former_addresses": former}
        current, addresses = addresses, addresses + former
        out["address_rows"] = [_row(a) for a in (await s.scalars(
            select(Address).where(or_(Address.address.in_(current), Address.contact_id == contact_id))
            .order_by(Address.id))).all()]
        prefs = (await s.scalars(select(Preference).where(Preference.contact_id == contact_id)
                                 .order_by(Preference.changed_at, Preference.id))).all() if contact_id else []
        out["membership"] = [_row(m) for m in (await s.scalars(
            select(Membership).where(Membership.contact_id == contact_id).order_by(Membership.id))).all()] \
            if contact_id else []
        out["preference"] = [_row(p) for p in prefs]
        rows = {(p.unit, p.channel): PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at) for p in prefs}
        units = list(settings.units) + sorted({p.unit for p in prefs} - set(settings.units) - {"*"})
        out["effective"] = [{"unit": u, "channel": c, "state": effective_state(rows, u, c).value}
                            for u in units for c in ("email", "sms", "phone", "letter", "web")] if contact_id else []
        out["suppression"] = [_row(x) for x in (await s.scalars(
            select(Suppression).where(Suppression.address.in_(addresses)).order_by(Suppression.id))).all()]
        out["soft_bounce"] = [_row(x) for x in (await s.scalars(
            select(SoftBounce).where(SoftBounce.address.in_(addresses)).order_by(SoftBounce.id))).all()]
        conds = [EventAddress.address.in_(addresses)]
        if contact_id is not None:
            conds.append(EventAddress.contact_id == contact_id)
        event_ids = set((await s.scalars(select(EventAddress.event_id).where(or_(*conds)))).all())
        reviews = (await s.scalars(select(ReviewItem).where(or_(ReviewItem.address.in_(addresses),
                                                                ReviewItem.event_id.in_(event_ids)))
                                   .order_by(ReviewItem.id))).all()
        event_ids |= {r.event_id for r in reviews}
        events = (await s.scalars(select(Event).where(Event.id.in_(event_ids))
                                  .order_by(Event.occurred_at, Event.id))).all()
        # An event about several people (an import, a bounce naming many) shows only this person's actions.
        out["event"] = [{**_row(e), "actions": [a for a in (e.actions or []) if not isinstance(a, dict)
                                                 or a.get("address") in addresses
                                                 or (contact_id is not None and a.get("contact_id") == contact_id)]}
                        for e in events]
        out["review_item"] = [_row(r) for r in reviews]
        items = (await s.scalars(select(InboundItem).where(or_(
            InboundItem.id.in_([e.item_id for e in events]), func.lower(InboundItem.mail_from).in_(addresses)))
            .order_by(InboundItem.received_at))).all()
        out["inbound_item"] = [{**_row(i, skip=("raw",)), **_raw_text(i.raw)} for i in items]
        out["outbox"] = [_row(o) for o in (await s.scalars(
            select(Outbox).where(Outbox.contact_id == contact_id).order_by(Outbox.sequence))).all()] \
            if contact_id else []
        # Preference history: every consent update published about the contact, oldest first.
        out["preference_history"] = [
            {k: o["payload"].get(k) for k in ("unit", "channel", "state", "reason", "source", "occurred_at",
                                              "operator")}
            for o in out["outbox"] if str(o["routing_key"]).startswith("preference.")]
        out["event_address"] = [_row(x) for x in (await s.scalars(
            select(EventAddress).where(or_(*conds)).order_by(EventAddress.id))).all()]
    tomb = await find_tombstone(db, keys, address)
    out["erased"] = ({"erased_at": _iso(tomb.erased_at), "key_id": tomb.key_id, "optouts": tomb.optouts,
                      "suppression": tomb.suppression} if tomb is not None else None)
    if contact is None and not any(out[k] for k in ("suppression", "event", "review_item", "inbound_item")) \
            and tomb is None:
        return None
    return out


async def _former_addresses(s: Any, contact_id: int, current: list[str]) -> list[str]:
    """Addresses the contact had before a change of address (rectification): those its events
    named for it, that are not its own now and not another contact's."""
    named = (await s.scalars(select(EventAddress.address).where(EventAddress.contact_id == contact_id)
                             .distinct())).all()
    named = sorted(set(named) - set(current))
    if not named:
        return []
    taken = set((await s.scalars(select(Address.address).where(Address.address.in_(named)))).all())
    return [a for a in named if a not in taken]


def personal_tables() -> set[str]:
    """The tables the registry says hold data about a person (what an export must cover)."""
    return {f.table for f in personal_fields()}


def summary(data: dict[str, Any]) -> str:
    """A short text a communications officer can send: what is held, in plain words."""
    lines = [f"What we hold about {data['address']}:"]
    contact = data.get("contact")
    if contact:
        lines.append(f"- A contact record (created {contact['created_at'][:10]}"
                     + (f", name {contact['name']}" if contact.get("name") else "") + ").")
        others = [a["address"] for a in data["address_rows"] if a["address"] != data["address"]]
        if others:
            lines.append(f"- Other addresses: {', '.join(others)}.")
        if data.get("former_addresses"):
            lines.append(f"- Addresses you had before: {', '.join(data['former_addresses'])}.")
    else:
        lines.append("- No contact record.")
    if data["membership"]:
        lines.append(f"- On the lists of: {', '.join(m['unit'] for m in data['membership'])}.")
    no = [f"{p['unit']}/{p['channel']}" for p in data["preference"] if p["state"] == "unsubscribed"]
    if no:
        lines.append(f"- You have opted out of: {', '.join('all' if s == '*/*' else s for s in no)}.")
    active = [s for s in data["suppression"] if s["active"]]
    if active:
        lines.append(f"- We do not send email to {', '.join(s['address'] for s in active)} "
                     f"({', '.join(s['reason'] for s in active)}).")
    lines.append(f"- {len(data['event'])} recorded events (opt-outs, bounces, replies, imports), "
                 f"{len(data['inbound_item'])} received messages, {len(data['review_item'])} items reviewed by staff, "
                 f"{len(data['outbox'])} updates sent to our mailing systems.")
    if data.get("erased"):
        lines.append(f"- The address was erased on {data['erased']['erased_at'][:10]}; only a one-way code of it is "
                     "kept, so that we never contact it again.")
    return "\n".join(lines)


@dataclass
class Erased:
    address: str
    applied: Applied | None             # None: nothing held but a tombstone (already erased), nothing written
    addresses: int = 0
    counts: dict[str, int] = field(default_factory=dict)


async def erase(db: Database, settings: Settings, raw_address: str, reason: str, now: datetime,
                operator: str) -> Erased | None:
    """Erase the address and its contact's other addresses, and those it had before a change of
    address (GDPR Art. 17), keeping their "no" as tombstones.

    Returns None when nothing is held about the address (nothing written). Raises
    ValueError for something that is not an address, an empty reason, or no keys to hash
    with (PostgreSQL without `tokens.keys`). Erasing an address that is already erased
    and holds nothing new writes nothing (idempotent).
    """
    address = _address(raw_address)
    if not reason.strip():
        raise ValueError("an erasure needs --reason (kept in the audit record, without the address)")
    keys = tombstone_keys(db, settings)
    if keys is None:
        raise ValueError("no keys to hash erased addresses with: set tokens.keys (UNSUBD_TOKENS__KEYS)")
    data = await export(db, settings, address)
    if data is None:
        return None
    addresses = list(dict.fromkeys([address, *(a["address"] for a in data["address_rows"]),
                                    *data["former_addresses"]]))
    held = data["contact"] or any(data[k] for k in ("suppression", "event", "review_item", "inbound_item",
                                                    "soft_bounce"))
    if not held:
        return Erased(address=address, applied=None)
    decision = rights_commands.erase(addresses, reason, operator, keys)
    applied = await apply(decision, db.unit_of_work(), now)
    return Erased(address=address, applied=applied, addresses=len(addresses), counts=dict(applied.counts))


class AddressConflict(ValueError):
    """A change of address that cannot be made: the new address is another contact's
    (`kind` "taken") or was erased (`kind` "erased"). Nothing was written."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Changed:
    old: str
    new: str
    applied: Applied
    counts: dict[str, int] = field(default_factory=dict)


async def change_address(db: Database, settings: Settings, raw_old: str, raw_new: str, reason: str, now: datetime,
                         operator: str) -> Changed | None:
    """Correct a contact's address (GDPR Art. 16): the contact of `raw_old` gets `raw_new`, keeping
    its preferences, memberships and history; the old address's suppression and soft bounces
    are not carried over. Published as `contact.address_changed`.

    Returns None when no contact has the old address (nothing written). Raises ValueError
    for something that is not an address, an empty reason or the same address twice, and
    AddressConflict when the new address belongs to another contact or was erased.
    """
    decision = rectify_commands.change_address(raw_old, raw_new, reason, operator)
    tombstone_keys(db, settings)              # so that the transaction finds a tombstone of the new address
    try:
        applied = await apply(decision, db.unit_of_work(), now)
    except Refused as exc:
        problem = exc.problems[0] if exc.problems else str(exc)
        if problem.startswith(OLD_UNKNOWN):
            return None
        kind = "erased" if problem.startswith(NEW_ERASED) else "taken" if problem.startswith(NEW_TAKEN) else "refused"
        raise AddressConflict(problem, kind) from None
    except IntegrityError:
        # Another transaction gave the new address to a contact after this one read it as
        # free (PostgreSQL: the address's unique index); this one was rolled back.
        raise AddressConflict(f"{NEW_TAKEN} (given to it just now)", "taken") from None
    action = decision.actions[0]
    return Changed(old=action.address, new=action.new_address or "", applied=applied, counts=dict(applied.counts))
