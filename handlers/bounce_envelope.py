"""Envelope evidence for bounces: the null reverse path and the VERP recipient.

RFC 5321 section 4.5.5: a delivery notification is sent with a null reverse path
(`MAIL FROM:<>`), so `item.mail_from == ""` is a sign that a message is a bounce.
RFC 3464 section 2 leaves it to the original sender to tell which recipient a
notification is about; the classic way is VERP, a return path that names the
recipient: `bounces+local=domain@<bounce domain>`. That form is unsigned, so it is
a hint of whom we sent to, never proof (signed return paths come later).
"""

from __future__ import annotations

from typing import Any

from handlers.addresses import normalise
from handlers.model import Action, ActionType, Inbound


def verp_recipient(item: Inbound, settings: Any) -> str | None:
    """The address named by an unsigned VERP envelope recipient, or None.

    Looks for `<bounce_local>+local=domain@<effective bounce domain>` among
    `item.rcpt_tos` (local part and domain compared case-insensitively; the last
    "=" separates local part and domain). Returns the normalised address, or None
    when there is no such recipient, when settings are missing, or when the tag is
    not an address (a signed token, for instance). Never raises.
    """
    if settings is None:
        return None
    try:
        local_base = str(settings.bounce_local).lower()
        domain = str(settings.effective_bounce_domain).lower()
        rcpts = tuple(item.rcpt_tos or ())
    except Exception:  # noqa: BLE001 - settings of another shape: no VERP reading
        return None
    for rcpt in rcpts:
        text = str(rcpt).strip().strip("<>")
        local, at, rcpt_domain = text.rpartition("@")
        if not at or rcpt_domain.lower().rstrip(".") != domain:
            continue
        base, plus, tag = local.partition("+")
        if not plus or base.lower() != local_base:
            continue
        user, eq, user_domain = tag.rpartition("=")
        if not eq or not user or not user_domain:
            continue
        address = normalise(f"{user}@{user_domain}")
        if address is not None:
            return address
    return None


def null_sender(item: Inbound) -> bool | None:
    """True for an SMTP null reverse path, False for another sender, None when unknown (a file)."""
    if item.mail_from is None:
        return None
    return item.mail_from.strip() in ("", "<>")


def guard_rows(rows: list[dict[str, Any]], sent_to: str | None) -> list[dict[str, Any]]:
    """Apply the safety rule of issue 3 item 4 to evidence rows, in place, and return them.

    When the envelope names the address we sent to (`sent_to`), a row about any
    other address never suppresses: its outcome becomes SOFT_BOUNCE at most and
    `why_not_suppressed` says why. A forwarded or misread bounce that names a third
    party must not remove that party from our lists. With `sent_to` None nothing
    changes.
    """
    if sent_to is None:
        return rows
    for row in rows:
        if row.get("address") and row["address"] != sent_to and row.get("outcome") == ActionType.SUPPRESS.value:
            row["outcome"] = ActionType.SOFT_BOUNCE.value
            row["why_not_suppressed"] = "names an address other than the VERP recipient"
    return rows


def actions_from_rows(rows: list[dict[str, Any]], ref: str | None = None) -> tuple[Action, ...]:
    """One email-channel Action per distinct address with an outcome; a hard outcome wins.

    Rows are evidence rows (`address`, `outcome`, `status`, `reason`, `hard`,
    `diagnostic`); rows without an address or outcome give nothing. `ref` names the
    bounced message (its Message-ID), so that two reports about it count once.
    """
    by_address: dict[str, Action] = {}
    for row in rows:
        address, outcome = row.get("address"), row.get("outcome")
        if not address or not outcome:
            continue
        suppress = outcome == ActionType.SUPPRESS.value
        previous = by_address.get(address)
        if previous is not None and (previous.hard or not suppress):
            continue
        by_address[address] = Action(
            type=ActionType(outcome), address=address, status=row.get("status"), reason=row.get("reason"),
            hard=suppress, channels=("email",), diagnostic=row.get("diagnostic") or None, ref=ref,
        )
    return tuple(by_address.values())


def original_ref(original: dict[str, Any] | None, envelope_id: str | None = None) -> str | None:
    """What identifies the bounced message: its Message-ID, else the DSN's Original-Envelope-Id."""
    mid = (original or {}).get("message_id")
    if mid and mid.strip():
        return mid.strip()[:300]
    return f"envid:{envelope_id.strip()[:200]}" if envelope_id and envelope_id.strip() else None


def _domain_of(text: str | None) -> str | None:
    """The domain of the last `@` in an address or Message-ID, lowercased, without brackets."""
    if not text or "@" not in text:
        return None
    return text.strip().rstrip(">").rsplit("@", 1)[1].strip().rstrip(".").lower() or None


def _under(domain: str | None, ours: set[str]) -> bool:
    return domain is not None and any(domain == d or domain.endswith("." + d) for d in ours)


def forged_original(original: dict[str, Any] | None, settings: Any) -> str | None:
    """Why a returned original that claims to be ours cannot be ours, or None.

    A bounce answers a message; when it returns that message's headers (RFC 3464
    section 2, third part) and they claim our sender (a From address at our mail or
    bounce domain, or a unit's own address) while the Message-ID was not made under
    our domains, the message was not sent by us: the bounce is forged or answers a
    spoofed message (mail corpus m003: From nyhetsbrev@ at our domain, Message-ID at
    evil.example). Acting on it would let anyone suppress any address. An original
    that does not claim to be ours, or is absent, returns None: attribution by signed
    return paths is the stronger check (issue 3, step 2).
    """
    if not original:
        return None
    ours = {d for d in (getattr(settings, "mail_domain", None), getattr(settings, "effective_bounce_domain", None)) if d}
    unit_addresses: set[str] = set()
    for unit in getattr(settings, "units", {}).values():
        unit_addresses.update(unit.from_addresses)
    ours |= {a.rsplit("@", 1)[1] for a in unit_addresses}
    sender = normalise(_mailbox(original.get("from")))
    claims_ours = sender is not None and (sender in unit_addresses or _under(_domain_of(sender), ours))
    if not claims_ours:
        return None
    mid_domain = _domain_of(original.get("message_id"))
    if _under(mid_domain, ours):
        return None
    return (f"the returned message claims our sender {sender} but its Message-ID is from "
            f"{mid_domain or 'nowhere'}: not sent by us (forged or spoofed)")


def _mailbox(raw_from: str | None) -> str | None:
    """The address inside `Name <addr>`, or the text itself; only for comparison with ours."""
    if not raw_from:
        return None
    if "<" in raw_from and ">" in raw_from:
        return raw_from[raw_from.rfind("<") + 1:raw_from.rfind(">")]
    return raw_from.strip()
