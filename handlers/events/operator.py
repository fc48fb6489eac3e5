"""Operators' commands: a contacts import, a suppression released, an opt-in, a review item settled, a note.

Every command names its operator (today the CLI's `--operator`, or the login name;
an API route or the console would pass its key's or user's name), which the event
keeps and the published update carries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Sequence

from handlers.model import ALL, Action, ActionType, Decision, Kind, Scope, item_key

RESOLUTIONS = ("optout", "ignore")


@dataclass(frozen=True)
class ImportRow:
    """One row of a contacts import: a normalised address, its name, units and recipient id."""

    line: int
    address: str
    name: str | None
    units: tuple[str, ...]
    recipient_id: str | None = None


def import_contacts(rows: Sequence[ImportRow], source_name: str, operator: str, batch: str | None = None) -> Decision:
    """The decision of one import: a JOIN per row (membership, name, recipient id), never consent.

    An empty `rows` gives a decision with no actions (the event records the empty
    import). `batch` makes the item id (default: a fresh one, so every run is recorded).
    """
    batch = batch or uuid.uuid4().hex
    actions = tuple(Action(ActionType.JOIN, row.address, units=row.units, name=row.name,
                           recipient_id=row.recipient_id) for row in rows)
    return Decision(item_id=item_key("import", batch), kind=Kind.IMPORT, source="import", verified=True,
                    actions=actions, operator=operator,
                    reason=f"contacts import of {len(rows)} rows from {source_name}",
                    evidence={"rows": len(rows), "file": source_name})


def release(address: str, reason: str, operator: str) -> Decision:
    """An operator lifts the suppression of `address` (normalised), with a reason kept as evidence.

    Raises ValueError for an empty reason: a release must say why.
    """
    why = reason.strip()
    if not why:
        raise ValueError("a release needs a reason (it is kept as evidence)")
    return Decision(item_id=f"admin:{uuid.uuid4()}", kind=Kind.ADMIN, source="admin", verified=True,
                    operator=operator, reason=f"suppression released by an operator: {why[:500]}",
                    actions=(Action(ActionType.RELEASE, address, reason=why[:64]),),
                    evidence={"operator_reason": why[:2000]})


def opt_in(address: str, units: Scope, channels: Scope, reason: str, operator: str) -> Decision:
    """An operator opts `address` back in for `units` x `channels` (the person asked, e.g. by phone).

    Raises ValueError for an empty reason: handlers.state.rules lets an operator opt someone
    in only with their identity and a reason.
    """
    why = reason.strip()
    if not why:
        raise ValueError("an opt-in by an operator needs a reason (it is kept as evidence)")
    return Decision(item_id=f"admin:{uuid.uuid4()}", kind=Kind.ADMIN, source="admin", verified=True,
                    operator=operator, reason=f"opted back in by an operator: {why[:500]}",
                    actions=(Action(ActionType.SUBSCRIBE, address, reason="optin", units=units, channels=channels),),
                    evidence={"operator_reason": why[:2000]})


MAX_NOTE = 2000


def note(address: str, text: str, operator: str) -> Decision:
    """An operator's note about `address` (normalised): an admin event that changes nothing.

    The one action is a NOTE, which handlers.state.plan plans nothing for; it is there
    so that the event names the address and shows in the contact's timeline. The text
    (cut to MAX_NOTE characters) is kept only in the evidence, never in the reason: an
    erasure empties the evidence of the person's events but only takes the address out
    of their reasons, and a note may say anything about the person. Raises ValueError
    for an empty text.
    """
    words = text.strip()
    if not words:
        raise ValueError("a note needs some text")
    return Decision(item_id=f"note:{uuid.uuid4()}", kind=Kind.ADMIN, source="note", verified=True,
                    operator=operator, reason="note by an operator",
                    actions=(Action(ActionType.NOTE, address),), evidence={"note": words[:MAX_NOTE]})


def settle_review(review_id: int, resolution: str, address: str | None, operator: str, *,
                  units: Scope = ALL, channels: Scope = ("email",), note: str = "",
                  reviewed_event_id: str | None = None) -> Decision:
    """A review item settled as an opt-out of `units` x `channels` for `address`, or as nothing.

    Raises ValueError for an unknown resolution or an opt-out with no address. Whether
    the item exists and is still open is checked by apply inside the transaction
    (handlers.state.plan: `refused`), so two operators cannot settle one item twice.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolve as one of {', '.join(RESOLUTIONS)}")
    actions: tuple[Action, ...] = ()
    if resolution == "optout":
        if not address:
            raise ValueError("the item names no usable address: give --address")
        actions = (Action(ActionType.UNSUBSCRIBE, address, reason="optout", units=units, channels=channels),)
    note = note.strip()
    return Decision(
        item_id=f"review:{review_id}", kind=Kind.ADMIN, source="review", actions=actions, operator=operator,
        reason=f"review {review_id} resolved as {resolution}" + (f": {note[:300]}" if note else ""),
        evidence={"review_id": review_id, "reviewed_event_id": reviewed_event_id, "note": note[:2000],
                  "settles_review": {"id": review_id, "resolution": resolution}})
