"""Rectification as rows: what `SqlUnitOfWork.record` writes for a plan's address changes (issue 23).

The contact's address row is rewritten in place (same id, same contact), so everything
that refers to the contact (preferences, memberships, events, the outbox, tokens issued
for it) follows the new address. The old address's suppression stays on the old address
and is detached from the contact: it is about a mailbox, not about the person, and the
old address may one day be someone else's. Its soft bounces never named the contact.
Events keep the address they concerned when they happened (history is not rewritten).
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import bindparam, update

from handlers.state.plan import AddressChange
from worker.store.models import Address, Suppression

_ADDRESS = Address.__table__
_SUPPRESSION = Suppression.__table__

MOVE_ADDRESS = (update(_ADDRESS)
                .where(_ADDRESS.c.address == bindparam("b_old"), _ADDRESS.c.contact_id == bindparam("b_contact"))
                .values(address=bindparam("b_new")))
DETACH_SUPPRESSION = (update(_SUPPRESSION)
                      .where(_SUPPRESSION.c.address == bindparam("b_old"),
                             _SUPPRESSION.c.contact_id == bindparam("b_contact"))
                      .values(contact_id=None))


def address_change_writes(changes: Sequence[AddressChange]) -> list[tuple[Any, Any]]:
    """The (statement, parameters) a unit of work holds for `changes`, made after the held inserts."""
    params = [{"b_old": c.old, "b_new": c.new, "b_contact": c.contact_id} for c in changes]
    if not params:
        return []
    return [(MOVE_ADDRESS, params), (DETACH_SUPPRESSION, [{k: p[k] for k in ("b_old", "b_contact")}
                                                          for p in params])]
