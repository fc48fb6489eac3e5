"""The consent rules in one place: what may say "yes" again, and what may only say "no".

DESIGN.md promise 6: opting out is easy to do and hard to fake for someone else;
opting back in needs proof. Precedence among the rows that exist is the plan's
(handlers.state.plan.effective_state: the most recently changed of (unit, channel),
(unit, *), (*, channel) and (*, *) wins; with none, subscribed; a suppression beats
consent). This module decides which decisions may write a `subscribed` row at all:

| may turn `unsubscribed` into `subscribed`                     | proof                             |
| ------------------------------------------------------------- | --------------------------------- |
| a preference-page save (`click`, source `page`)               | the signed token and its form proof |
| an emailed opt-in request (`reply`)                           | a verified sender (our MTA's Authentication-Results, or a reply-address token) |
| an operator's action (`admin`)                                | the operator's identity and a reason |

Never: an import (membership only), a bounce, a complaint, a click or one-click
(they only ever unsubscribe), an upstream event, unverified mail. A `subscribe`
action from any of those is dropped by the plan, and the event records why.
"""

from __future__ import annotations

from handlers.model import Decision, Kind

# (kind, source) pairs whose subscribe actions are believed once `verified` holds.
_OPT_IN_SOURCES: frozenset[tuple[Kind, str]] = frozenset({(Kind.CLICK, "page")})


def may_subscribe(decision: Decision) -> str | None:
    """None when `decision` may turn consent back to subscribed; else why not, in words.

    Follows DESIGN.md promise 6. A decision with no `verified` proof never may; an
    operator's action needs the operator's identity and a reason (the decision's
    `reason` text); an emailed request needs the sender proven (`verified`).
    """
    if decision.kind is Kind.ADMIN:
        if not decision.operator:
            return "an operator's opt-in must name the operator"
        if not decision.reason.strip():
            return "an operator's opt-in needs a reason"
        return None
    if not decision.verified:
        return "opting back in needs proof (a signed token, a verified sender, or an operator)"
    if decision.kind is Kind.REPLY:
        return None
    if (decision.kind, decision.source) in _OPT_IN_SOURCES:
        return None
    return f"a {decision.kind.value} from {decision.source} never opts anyone back in"
