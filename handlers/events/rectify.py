"""Rectification (GDPR Art. 16): an operator corrects a contact's email address. Pure.

The contact keeps everything that is about the person (its preferences, memberships,
events and the tokens issued for it, which name the contact, not the address) under
the new address. What is about the old address stays with it: its suppression and its
soft-bounce count are not carried over, because a dead mailbox says nothing about the
new one. handlers.state.plan checks the change against the state read in the
transaction, and refuses it (nothing written) when the old address has no contact, the
new one belongs to another contact, or the new one was erased at the person's request.
"""

from __future__ import annotations

import uuid

from handlers.mail.addresses import normalise
from handlers.model import Action, ActionType, Decision, Kind


def change_address(raw_old: str, raw_new: str, reason: str, operator: str) -> Decision:
    """The command that moves the contact of `raw_old` to `raw_new`.

    Both are normalised (handlers.mail.addresses.normalise). Raises ValueError, naming
    which, for an old or new value that is not an address, an empty reason, or two
    values that are the same address once normalised. Every run is a new item: the
    same correction made twice is refused the second time by the plan (the old address
    has no contact any more), never applied twice.
    """
    old, new = normalise(raw_old), normalise(raw_new)
    if old is None:
        raise ValueError(f"the old address is not an email address: {raw_old[:100]!r}")
    if new is None:
        raise ValueError(f"the new address is not an email address: {raw_new[:100]!r}")
    why = reason.replace("\x00", "").strip()     # PostgreSQL keeps no NUL in text
    if not why:
        raise ValueError("a change of address needs a reason (kept in the audit record)")
    if old == new:
        raise ValueError("the old and the new address are the same address")
    action = Action(ActionType.CHANGE_ADDRESS, old, reason="address_changed", new_address=new)
    return Decision(item_id=f"rectify:{uuid.uuid4()}", kind=Kind.ADMIN, source="rectification", verified=True,
                    operator=operator, actions=(action,), reason=f"address corrected: {why[:500]}",
                    evidence={"operator_reason": why[:2000], "old_address": old, "new_address": new})
