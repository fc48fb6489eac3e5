"""Rights requests fulfilled by an operator (GDPR Art. 12(3), 15, 16, 17, 21): the command that
closes a rights item. Pure.

A rights item is a review item of kind `rights_request` (opened by handlers.state.plan from a
reply's `rights_request` evidence, handlers.replies.rights). Closing it is an event of its
own, written by apply with the item's resolution `fulfilled` in one transaction, as a
review item settled (handlers.events.operator.settle_review): the same item id, so that
one item is never closed twice, and the plan refuses an item already closed.

What the closing command does besides, by type:

* objection: the opt-out of every unit and channel for the address (Art. 21(3)); a
  no-op when it is already in effect (handlers.state.plan writes nothing twice);
* access and rectification: nothing else (the export, or the change of address, is
  done by worker.ops.requests before the item is closed);
* erasure: not closed here. The erasure itself (handlers.events.rights.erase) closes
  every open item about the address in its own transaction.
"""

from __future__ import annotations

from handlers.model import ALL, Action, ActionType, Decision, Kind

FULFILLED = "fulfilled"


def fulfil(review_id: int, kind: str, address: str | None, operator: str, *, note: str = "",
           done: str = "", reviewed_event_id: str | None = None) -> Decision:
    """The command that closes rights item `review_id` of type `kind` as fulfilled.

    `done` says in words what was done for it (kept in the reason, as is `note`).
    Raises ValueError for an objection with no address to opt out, or an unknown `kind`.
    """
    if kind not in ("access", "rectification", "objection", "erasure"):
        raise ValueError(f"not a rights request type: {kind!r}")
    actions: tuple[Action, ...] = ()
    if kind == "objection":
        if not address:
            raise ValueError("the item names no address to opt out")
        actions = (Action(ActionType.UNSUBSCRIBE, address, reason="objection", units=ALL, channels=ALL),)
    note = note.strip()
    why = f"rights request {review_id} ({kind}) fulfilled" + (f": {done}" if done else "") \
        + (f"; note: {note[:300]}" if note else "")
    return Decision(
        item_id=f"review:{review_id}", kind=Kind.ADMIN, source="rights", actions=actions, operator=operator,
        verified=True, reason=why,
        evidence={"review_id": review_id, "reviewed_event_id": reviewed_event_id, "rights_type": kind,
                  "note": note[:2000], "settles_review": {"id": review_id, "resolution": FULFILLED}})
