"""Which of our addresses a recipient is: the SMTP listener accepts only these (no relay)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from config import Settings


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


def _table(settings: Settings) -> dict[tuple[str, str], Route]:
    table: dict[tuple[str, str], Route] = {}
    for domain in {settings.mail_domain, settings.effective_bounce_domain}:
        table[(settings.bounce_local, domain)] = Route(Mailbox.BOUNCE)
        table[("postmaster", domain)] = Route(Mailbox.POSTMASTER)
    md = settings.mail_domain
    table[(settings.reply_local, md)] = Route(Mailbox.REPLY)
    table[(settings.fbl_local, md)] = Route(Mailbox.FBL)
    table[(settings.unsubscribe_local, md)] = Route(Mailbox.UNSUBSCRIBE)
    for unit in settings.units.values():
        for address in unit.from_addresses + unit.reply_addresses:
            local, _, domain = address.rpartition("@")
            table.setdefault((local, domain), Route(Mailbox.UNIT, unit=unit.key))
    return table


class Router:
    """Routes recipients against one Settings; build it once, call it per RCPT."""

    def __init__(self, settings: Settings) -> None:
        self._table = _table(settings)

    def __call__(self, address: str | None) -> Route | None:
        return _lookup(self._table, address)


def route(address: str | None, settings: Settings) -> Route | None:
    """The mailbox `address` reaches under `settings`; see Router for repeated use."""
    return _lookup(_table(settings), address)


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
