"""Contacts for operators: CSV import and the effective state of one address.

Import records which units a contact is on (membership). It never touches consent:
a re-imported list does not re-subscribe anyone who opted out. The import itself is
decided in handlers.events.operator and written by handlers.state.apply.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from handlers.mail.addresses import normalise
from handlers.state.apply import Refused, apply
from handlers.events.operator import ImportRow, import_contacts
from handlers.model import WILDCARD, Channel, State
from handlers.state.plan import PreferenceRow, effective_state
from worker.store.db import Database
from worker.store.models import Address, Contact, Event, EventAddress, Membership, Preference, Suppression

CHANNELS = [c.value for c in Channel]


class ImportError_(ValueError):
    """The CSV file has rows that cannot be imported; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    kept_opt_out: int = 0
    unchanged: int = 0


def parse_csv(text: str, settings: Settings) -> list[ImportRow]:
    """Rows of a CSV with a header naming `address` (required), `name`, `units` and `recipient_id`.

    `units` holds unit keys separated by ';', '|' or spaces; empty means none.
    `recipient_id` is the sending system's id for the recipient (the value of its
    X-NV-Recipient-Id header, at most 64 characters), which names the contact of a
    complaint whose address the feedback loop redacted. Every problem is collected
    with its line number, and ImportError_ lists them all.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "address" not in header:
        raise ImportError_(["line 1: the header must name an 'address' column "
                            "(and optionally name, units, recipient_id)"])
    reader.fieldnames = header
    rows, problems, seen, seen_ids = [], [], {}, {}
    for line_no, record in enumerate(reader, start=2):
        raw_address = (record.get("address") or "").strip()
        address = normalise(raw_address)
        if address is None:
            problems.append(f"line {line_no}: not an email address: {raw_address[:80]!r}")
            continue
        if address in seen:
            problems.append(f"line {line_no}: {address} already on line {seen[address]}")
            continue
        seen[address] = line_no
        units = tuple(u for u in re.split(r"[;|\s]+", (record.get("units") or "").strip()) if u)
        unknown = [u for u in units if u not in settings.units]
        if unknown:
            problems.append(f"line {line_no}: unknown unit(s) {', '.join(unknown)} "
                            f"(configured: {', '.join(settings.units) or 'none'})")
            continue
        name = (record.get("name") or "").strip() or None
        recipient_id = (record.get("recipient_id") or "").strip() or None
        if recipient_id is not None and (len(recipient_id) > 64 or not recipient_id.isprintable()):
            problems.append(f"line {line_no}: recipient_id must be at most 64 printable characters")
            continue
        if recipient_id is not None and recipient_id in seen_ids:
            problems.append(f"line {line_no}: recipient_id {recipient_id!r} already on line {seen_ids[recipient_id]}")
            continue
        if recipient_id is not None:
            seen_ids[recipient_id] = line_no
        rows.append(ImportRow(line=line_no, address=address, name=name, units=units, recipient_id=recipient_id))
    if problems:
        raise ImportError_(problems)
    return rows


async def import_rows(db: Database, rows: list[ImportRow], now: datetime, source_name: str,
                      operator: str = "unknown") -> ImportResult:
    """Apply an import (handlers.events.operator.import_contacts) in one transaction.

    It records who is on which unit, never consent: an opt-out stands (counted as
    `kept_opt_out`). What it changes is published like any other change. Raises
    ImportError_ (nothing written) when a recipient id belongs to another contact.
    """
    try:
        applied = await apply(import_contacts(rows, source_name, operator), db.unit_of_work(), now)
    except Refused as exc:
        raise ImportError_(exc.problems) from None
    counts = applied.counts
    return ImportResult(created=counts.get("created", 0), updated=counts.get("updated", 0),
                        kept_opt_out=counts.get("kept_opt_out", 0), unchanged=counts.get("unchanged", 0))


@dataclass
class ContactView:
    address: str
    contact_id: int | None
    name: str | None = None
    addresses: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)             # the units the contact is on (membership)
    preferences: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    erased: bool = False                                         # no contact, but a tombstone blocks the address

    def to_json(self) -> dict[str, Any]:
        return {**({"erased": True} if self.erased else {}),"address": self.address, "contact_id": self.contact_id, "name": self.name,
                "addresses": self.addresses, "units": self.units, "preferences": self.preferences, "preference_rows": self.rows,
                "suppressions": self.suppressions, "events": self.events}


async def show(sessions: async_sessionmaker[AsyncSession], settings: Settings, raw_address: str,
               events: int = 20) -> ContactView | None:
    """Effective preferences, suppressions and recent events for one address, or None if unknown."""
    address = normalise(raw_address)
    if address is None:
        raise ValueError(f"not an email address: {raw_address!r}")
    async with sessions() as s:
        found = await s.scalar(select(Address).where(Address.address == address))
        view = ContactView(address=address, contact_id=found.contact_id if found else None)
        addresses = [address]
        if found is not None:
            contact = await s.get(Contact, found.contact_id)
            view.name = contact.name if contact else None
            addresses = list((await s.scalars(
                select(Address.address).where(Address.contact_id == found.contact_id).order_by(Address.id))).all())
            view.units = list((await s.scalars(select(Membership.unit).where(
                Membership.contact_id == found.contact_id).order_by(Membership.joined_at, Membership.unit))).all())
            prefs = (await s.scalars(select(Preference).where(Preference.contact_id == found.contact_id)
                                     .order_by(Preference.changed_at))).all()
            rows = {(p.unit, p.channel): PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at)
                    for p in prefs}
            view.rows = [{"unit": p.unit, "channel": p.channel, "state": p.state, "reason": p.reason,
                          "source": p.source, "changed_at": p.changed_at.isoformat()} for p in prefs]
            units = [u for u in settings.units] + sorted({p.unit for p in prefs} - set(settings.units) - {WILDCARD})
            view.preferences = [{"unit": u, "channel": c, "state": effective_state(rows, u, c).value}
                                for u in units for c in CHANNELS]
        view.addresses = addresses
        sups = (await s.scalars(select(Suppression).where(Suppression.address.in_(addresses))
                                .order_by(Suppression.created_at))).all()
        view.suppressions = [{"address": x.address, "reason": x.reason, "active": x.active,
                              "since": x.created_at.isoformat()} for x in sups if x.active]
        conds = [EventAddress.address.in_(addresses)]
        if found is not None:
            conds.append(EventAddress.contact_id == found.contact_id)
        evs = (await s.execute(
            select(Event).join(EventAddress, EventAddress.event_id == Event.id).where(or_(*conds))
            .order_by(Event.occurred_at.desc()).limit(events).distinct())).scalars().all()
        view.events = [{"id": e.id, "kind": e.kind, "source": e.source, "reason": e.reason,
                        "occurred_at": e.occurred_at.isoformat(), "actions": e.actions, "evidence": e.evidence}
                       for e in evs]
    if found is None and await _tombstoned(sessions, settings, address):
        # Erased (issue 23): the address is gone, its tombstone still says no to everything.
        view.erased = True
        view.preferences = [{"unit": u, "channel": c, "state": State.UNSUBSCRIBED.value}
                            for u in settings.units for c in CHANNELS]
        return view
    if found is None and not view.suppressions and not view.events:
        return None
    return view


async def _tombstoned(sessions: async_sessionmaker[AsyncSession], settings: Settings, address: str) -> bool:
    """Whether a tombstone blocks the address (its keyed hash under any token key)."""
    from handlers.events.rights import all_digests
    from worker.store.keys import keyring_for
    from worker.store.models import Tombstone

    keys = keyring_for(settings)
    if keys is None:
        return False
    async with sessions() as s:
        return await s.scalar(select(Tombstone.id).where(
            Tombstone.digest.in_(list(all_digests(keys, address)))).limit(1)) is not None
