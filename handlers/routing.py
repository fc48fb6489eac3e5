"""Which of our addresses a recipient is: the SMTP listener accepts only these (no relay)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Protocol

from config.settings import Unit


class OurAddresses(Protocol):
    """Where our mail lives: the Settings at start, or a handlers.context.Context."""

    mail_domain: str
    effective_bounce_domain: str
    bounce_local: str
    reply_local: str
    fbl_local: str
    unsubscribe_local: str
    units: Mapping[str, Unit]


class Mailbox(enum.StrEnum):
    UNIT = "unit"                # a unit's own sending or reply address
    REPLY = "reply"              # the shared reply address
    BOUNCE = "bounce"            # the return path, VERP-tagged or plain
    FBL = "fbl"                  # feedback-loop (ARF complaint) reports
    UNSUBSCRIBE = "unsubscribe"  # List-Unsubscribe mailto: unsubscribe+TOKEN@
    POSTMASTER = "postmaster"    # RFC 5321 section 4.5.1: must be accepted


@dataclass(frozen=True)
class Route:
    mailbox: Mailbox
    unit: str | None = None      # the unit key, for unit addresses
    tag: str | None = None       # what followed '+' in the local part (VERP token, unsubscribe token)


def _table(ours: OurAddresses) -> dict[tuple[str, str], Route]:
    table: dict[tuple[str, str], Route] = {}
    for domain in {ours.mail_domain, ours.effective_bounce_domain}:
        table[(ours.bounce_local, domain)] = Route(Mailbox.BOUNCE)
        table[("postmaster", domain)] = Route(Mailbox.POSTMASTER)
    md = ours.mail_domain
    table[(ours.reply_local, md)] = Route(Mailbox.REPLY)
    table[(ours.fbl_local, md)] = Route(Mailbox.FBL)
    table[(ours.unsubscribe_local, md)] = Route(Mailbox.UNSUBSCRIBE)
    for unit in ours.units.values():
        for address in unit.from_addresses + unit.reply_addresses:
            local, _, domain = address.rpartition("@")
            table.setdefault((local, domain), Route(Mailbox.UNIT, unit=unit.key))
    return table


class Router:
    """Routes recipients against our addresses; build it once, call it per RCPT."""

    def __init__(self, ours: OurAddresses) -> None:
        self._table = _table(ours)

    def __call__(self, address: str | None) -> Route | None:
        return _lookup(self._table, address)


def _lookup(table: dict[tuple[str, str], Route], address: str | None) -> Route | None:
    """The mailbox `address` reaches, or None if it is not ours (refuse it: no relay).

    Local part and domain compare case-insensitively; `local+tag@domain` reaches the
    same mailbox as `local@domain` with `tag` kept (RFC 5233 subaddressing). An
    address with a source route, a quoted local part or no domain is not ours.
    """
    if not address or len(address) > 512:
        return None
    text = address.strip().strip("<>")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(c in text for c in ' "\\,:;\r\n\x00'):
        return None
    base, plus, tag = local.partition("+")
    found = table.get((base.lower(), domain.lower().rstrip(".")))
    if found is None:
        return None
    if found.mailbox is Mailbox.POSTMASTER and plus:
        return None
    return Route(found.mailbox, unit=found.unit, tag=tag if plus else None)
