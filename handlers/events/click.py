"""Items that arrive on the queue as JSON from upstream systems (issue 6 item 2).

`{"type": "click", "token": "...", "at": "2026-03-01T12:00:00Z"}`: a link click from
an upstream web tier, with the same effect as the one-click POST (issue 5 item 6).
`{"type": "bounce", ...}` and `{"type": "complaint", ...}`: events an upstream
sending platform learned of itself (handlers.events.upstream), and `{"type": "sent_counts", ...}`,
how many messages a unit sent on a day (also there). docs/inbound.md has them all.
"""

from __future__ import annotations

import json
from datetime import datetime

from handlers.model import Action, ActionType, Decision, Inbound, Kind
from handlers.tokens import scope, verify
from handlers.events.upstream import SENT_COUNTS, decide_bounce_event, decide_complaint_event, decide_sent_counts_event
from handlers.context import Context

MAX_ITEM = 64 * 1024


def decide_queue_item(item: Inbound, ctx: Context, now: datetime) -> Decision:
    """Decide one JSON item. Never raises.

    A click with a valid token unsubscribes exactly the token's contact, unit and
    channel (source "queue", verified). A click whose token does not verify changes
    nothing (a forged or damaged link is not a request). Anything that is not a JSON
    object with a known `type` goes to review with the reason.
    """
    try:
        data = json.loads(item.raw[:MAX_ITEM]) if len(item.raw) <= MAX_ITEM else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return Decision.unreadable(item.id, reason="queue item is not a JSON object", source="queue")
    kind = data.get("type")
    if kind == "bounce":
        return decide_bounce_event(item, data, ctx, now)
    if kind == "complaint":
        return decide_complaint_event(item, data, ctx, now)
    if kind == SENT_COUNTS:
        return decide_sent_counts_event(item, data, ctx, now)
    if kind != "click":
        return Decision.unreadable(item.id, reason=f"queue item of unknown type {str(kind)[:40]!r}",
                                   source="queue")
    token, at = data.get("token"), data.get("at")
    evidence = {"type": "click", "at": str(at)[:40] if at is not None else None}
    keyring = ctx.keyring
    claims = verify(token, keyring) if isinstance(token, str) and keyring is not None else None
    if claims is None:
        return Decision.ignore(item.id, Kind.CLICK, reason="link click with a token that does not verify",
                               source="queue", evidence=evidence)
    units, channels = scope(claims)
    evidence["token_claims"] = {"contact_id": claims.contact_id, "unit": claims.unit, "channel": claims.channel}
    action = Action(ActionType.UNSUBSCRIBE, "", reason="one_click", units=units, channels=channels,
                    contact_id=claims.contact_id)
    return Decision(item_id=item.id, kind=Kind.CLICK, actions=(action,), verified=True, source="queue",
                    reason=f"link click (queue) for {claims.unit}/{claims.channel}", evidence=evidence)
