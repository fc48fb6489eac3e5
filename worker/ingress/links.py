"""Unsubscribe links: issue the header set for a contact, and read a token's contact back.

Shared by `unsubd token`, `POST /v1/tokens` and the `/u/{token}` pages. Reads only;
every write goes through handlers.state.apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from handlers.mail.addresses import normalise
from handlers.model import WILDCARD, Channel, State
from handlers.state.plan import PreferenceRow
from handlers.tokens import Keyring, link_headers, reply_address, return_path, sign, sign_return_path
from worker.store.models import Address, Membership, Preference

CHANNELS = tuple(c.value for c in Channel)


class BadRequest(ValueError):
    """The request names something that cannot be: an unknown unit or channel, a non-address."""


@dataclass(frozen=True)
class Issued:
    token: str
    contact_id: int
    address: str
    unit: str
    channel: str
    headers: dict[str, str]
    preferences_url: str
    return_path: str
    reply_to: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token, "contact_id": self.contact_id, "address": self.address, "unit": self.unit,
            "channel": self.channel, "headers": self.headers, "preferences_url": self.preferences_url,
            # The envelope sender (SMTP MAIL FROM) of the message; the receiving system
            # turns it into the Return-Path header, and bounces come back to it.
            "return_path": self.return_path,
            # A Reply-To that proves, when someone replies "unsubscribe", whose mail it was.
            "reply_to": self.reply_to,
            "dkim_sign": ["List-Unsubscribe", "List-Unsubscribe-Post"],
        }


@dataclass
class ContactPreferences:
    contact_id: int
    address: str
    rows: dict[tuple[str, str], PreferenceRow] = field(default_factory=dict)
    units: frozenset[str] = frozenset()          # the units the contact is on (membership)


def check_scope(settings: Settings, unit: str, channel: str) -> None:
    if unit != WILDCARD and unit not in settings.units:
        raise BadRequest(f"unknown unit {unit!r} (configured: {', '.join(settings.units) or 'none'}, or '*')")
    if channel != WILDCARD and channel not in CHANNELS:
        raise BadRequest(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)}, or '*')")


async def contact_id_for(sessions: async_sessionmaker[AsyncSession], address: str) -> int | None:
    async with sessions() as s:
        return await s.scalar(select(Address.contact_id).where(Address.address == address))


async def issue(sessions: async_sessionmaker[AsyncSession], settings: Settings, keyring: Keyring,
                raw_address: str, unit: str, channel: str = "email") -> Issued | None:
    """The token and header set for an existing contact, or None if no contact has the address.

    Raises BadRequest for a string that is not an address, or an unknown unit or channel.
    """
    address = normalise(raw_address)
    if address is None:
        raise BadRequest(f"not an email address: {raw_address[:100]!r}")
    check_scope(settings, unit, channel)
    contact_id = await contact_id_for(sessions, address)
    if contact_id is None:
        return None
    token = sign(contact_id, unit, channel, keyring)
    headers = link_headers(token, settings.tokens.base_url, settings.unsubscribe_local, settings.mail_domain)
    verp = return_path(sign_return_path(contact_id, address, unit, keyring), settings.bounce_local,
                       settings.effective_bounce_domain)
    unit_replies = settings.units[unit].reply_addresses if unit in settings.units else ()
    reply_to = reply_address(token, unit_replies[0] if unit_replies else f"{settings.reply_local}@{settings.mail_domain}")
    return Issued(token=token, contact_id=contact_id, address=address, unit=unit, channel=channel, headers=headers,
                  preferences_url=f"{settings.tokens.base_url}/u/{token}", return_path=verp, reply_to=reply_to)


async def load_preferences(sessions: async_sessionmaker[AsyncSession], contact_id: int) -> ContactPreferences | None:
    """The contact's first email address and preference rows, or None if the contact has no address
    (unknown, or anonymised)."""
    async with sessions() as s:
        address = await s.scalar(select(Address.address).where(Address.contact_id == contact_id,
                                                               Address.channel == "email")
                                 .order_by(Address.id).limit(1))
        if address is None:
            return None
        prefs = (await s.scalars(select(Preference).where(Preference.contact_id == contact_id))).all()
        units = (await s.scalars(select(Membership.unit).where(Membership.contact_id == contact_id))).all()
    rows = {(p.unit, p.channel): PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at) for p in prefs}
    return ContactPreferences(contact_id=contact_id, address=address, rows=rows, units=frozenset(units))
