"""Contacts for operators: CSV import and the effective state of one address.

Import records which units a contact hears from. It never overrides consent: a
re-imported list does not re-subscribe anyone who opted out.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from handlers.addresses import normalise
from handlers.model import WILDCARD, Channel, State
from handlers.plan import PreferenceRow, effective_state
from handlers.model import item_key
from worker.db import Database
from worker.models import Address, Contact, Event, EventAddress, Preference, Suppression

CHANNELS = [c.value for c in Channel]


class ImportError_(ValueError):
    """The CSV file has rows that cannot be imported; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ImportRow:
    line: int
    address: str
    name: str | None
    units: tuple[str, ...]
    recipient_id: str | None = None


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


async def import_rows(db: Database, rows: list[ImportRow], now: datetime, source_name: str) -> ImportResult:
    """Create or update contacts in one transaction, with one `import` event as evidence."""
    result = ImportResult()
    event_id = str(uuid.uuid4())
    async with db.transaction() as s:
        s.add(Event(id=event_id, item_id=item_key("import", event_id), kind="import", source="import",
                    reason=f"contacts import of {len(rows)} rows from {source_name}", review=False,
                    verified=True, actions=[], evidence={"rows": len(rows), "file": source_name},
                    occurred_at=now))
        await s.flush()
        conflicts = []
        for row in rows:
            found = await s.scalar(select(Address).where(Address.address == row.address))
            if row.recipient_id is not None:
                holder = await s.scalar(select(Contact.id).where(Contact.recipient_id == row.recipient_id))
                if holder is not None and (found is None or holder != found.contact_id):
                    conflicts.append(f"line {row.line}: recipient_id {row.recipient_id!r} belongs to another contact")
                    continue
            if found is None:
                contact = Contact(name=row.name, origin="import", seq=0, created_at=now, updated_at=now,
                                  recipient_id=row.recipient_id)
                s.add(contact)
                await s.flush()
                s.add(Address(contact_id=contact.id, channel="email", address=row.address, created_at=now))
                contact_id, changed = contact.id, True
                result.created += 1
            else:
                contact_id, changed = found.contact_id, False
                contact = await s.get(Contact, contact_id)
                if row.name and contact is not None and contact.name != row.name:
                    contact.name, contact.updated_at, changed = row.name, now, True
                if row.recipient_id and contact is not None and contact.recipient_id != row.recipient_id:
                    contact.recipient_id, contact.updated_at, changed = row.recipient_id, now, True
            prefs = {(p.unit, p.channel): p for p in (await s.scalars(
                select(Preference).where(Preference.contact_id == contact_id))).all()}
            view = {k: PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at) for k, p in prefs.items()}
            for unit in row.units:
                if (unit, WILDCARD) in prefs:
                    continue
                if effective_state(view, unit, WILDCARD) is not State.SUBSCRIBED:
                    result.kept_opt_out += 1          # an opt-out stands; import never re-subscribes
                    continue
                s.add(Preference(contact_id=contact_id, unit=unit, channel=WILDCARD, state=State.SUBSCRIBED.value,
                                 reason="import", source="import", event_id=event_id, changed_at=now))
                changed = True
            s.add(EventAddress(event_id=event_id, address=row.address, contact_id=contact_id))
            if found is not None:
                if changed:
                    result.updated += 1
                else:
                    result.unchanged += 1
        if conflicts:
            raise ImportError_(conflicts)               # rolls the whole import back
    return result


@dataclass
class ContactView:
    address: str
    contact_id: int | None
    name: str | None = None
    addresses: list[str] = field(default_factory=list)
    preferences: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "contact_id": self.contact_id, "name": self.name,
                "addresses": self.addresses, "preferences": self.preferences, "preference_rows": self.rows,
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
    if found is None and not view.suppressions and not view.events:
        return None
    return view
