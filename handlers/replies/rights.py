"""Rights requests found in a reply, and the date by which each must be answered. Pure.

GDPR Art. 12(3): a request about one's personal data is answered "without undue
delay and in any event within one month of receipt". unsubd reads four kinds of
request in the reply's own words (handlers.replies.intent):

* access (Art. 15): "what data do you hold about me", "registerutdrag";
* erasure (Art. 17): "delete my data", "stryk mig ur registret";
* rectification (Art. 16): "please correct my name", "min adress har ändrats till ...",
  and any address change;
* objection (Art. 21): "I object to the use of my data for marketing", "återkallar
  mitt samtycke".

Each opens a rights item (a review item of kind `rights_request`,
handlers.state.plan.review_items) due one calendar month after the message was
received. An erasure request also covers the objection, so it opens no objection
item of its own. Opting out does not wait for the rights item: what the reply
reader acts on (an erasure is an opt-out of everything) is unchanged.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:       # only for the annotations: handlers.state.plan imports this module, and stays light
    from handlers.replies.intent import Intent

# In the order a rights item is opened for each (access first: erasing closes every open
# item about the address, so an access request must be answered before the erasure).
RIGHTS_TYPES = ("access", "rectification", "objection", "erasure")
_ITEM_REASON = re.compile(r"^rights request \((access|rectification|objection|erasure)\)")


def one_month_after(received: datetime) -> datetime:
    """The same moment one calendar month after `received` (GDPR Art. 12(3), "within one month").

    The day of the month stays the same when the next month has it; otherwise it is
    the next month's last day: 31 January gives 28 (or 29) February, 31 March gives
    30 April, 31 December gives 31 January. The result is always after `received`
    and at most 31 days later. The time of day and time zone are kept. Never raises
    for a valid datetime, up to December of year 9998.
    """
    year, month = (received.year + 1, 1) if received.month == 12 else (received.year, received.month + 1)
    day = min(received.day, calendar.monthrange(year, month)[1])
    return received.replace(year=year, month=month, day=day)


def rights_types(intent: "Intent") -> list[str]:
    """The rights requests in `intent`, in RIGHTS_TYPES order; [] for none.

    An address change counts as rectification. An objection beside an erasure is
    covered by the erasure and not listed.
    """
    found = {
        "access": intent.access,
        "rectification": intent.rectification or intent.address_change,
        "objection": intent.objection and not intent.erasure,
        "erasure": intent.erasure,
    }
    return [t for t in RIGHTS_TYPES if found[t]]


def rights_request(intent: "Intent", received: datetime) -> dict[str, Any] | None:
    """The `rights_request` evidence of a reply: its types, the main one (`type`, erasure before
    the others, as before rectification and objection were read) and the due date
    (`deadline`, ISO date, one month after `received`). None when the reply asks for none."""
    types = rights_types(intent)
    if not types:
        return None
    main = "erasure" if "erasure" in types else types[0]
    return {"type": main, "types": types, "deadline": one_month_after(received).date().isoformat()}


def item_reason(kind: str, deadline: str, reason: str) -> str:
    """The reason a rights item is stored with: its type first, so that a reader of the review
    queue (and `rights_type`) sees what is asked."""
    return f"rights request ({kind}), due {deadline}: {reason}"


def rights_type(reason: str | None) -> str | None:
    """The type a rights item's reason names (see item_reason), or None for another reason."""
    found = _ITEM_REASON.match(reason or "")
    return found.group(1) if found else None
