"""Bounce and complaint events that upstream systems put on the queue as JSON (issue 6 item 2).

A sending platform that learns of bounces and complaints itself (an ESP webhook, a
relay's log reader) tells unsubd with one JSON object per event; see docs/inbound.md:

    {"type": "bounce", "address": "a@example.se", "status": "5.1.1", "diagnostic": "...",
     "action": "failed", "message_id": "<...>", "return_path": "bounces+TOKEN@...", "at": "..."}
    {"type": "complaint", "address": "a@example.se", "unit": "alumni", "feedback_type": "abuse",
     "return_path": "...", "list_unsubscribe": "...", "at": "..."}

They go the same way as the mail forms: a bounce is read as the RFC 3464 recipient
group it stands for (handlers.bounces.dsn.structured_row; handlers.bounces.envelope
applies the return-path rules when `return_path` is given), and a complaint like an
ARF report (handlers.complaints.arf.decide_complaint). The queue is ours, so an event without a
return path is believed as it says; one with a return path that does not verify is
recorded as a forgery and neither suppresses nor counts as a soft bounce, as for mail.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from handlers.mail.addresses import normalise
from handlers.complaints.arf import ArfReport, Original, decide_complaint
from handlers.bounces.envelope import actions_from_rows, apply_envelope
from handlers.bounces.dsn import structured_row
from handlers.model import Decision, Inbound, Kind
from handlers.context import Context

MAX_TEXT = 1000
ACTIONS = ("failed", "delayed", "delivered")


def _text(data: dict[str, Any], key: str, limit: int = MAX_TEXT) -> str | None:
    value = data.get(key)
    return (value.strip()[:limit] or None) if isinstance(value, str) else None


def _problem(item: Inbound, kind: Kind, why: str, evidence: dict[str, Any]) -> Decision:
    return Decision(item_id=item.id, kind=kind, review=True, reason=f"upstream {kind.value} event: {why}",
                    source="queue", evidence=evidence)


def decide_bounce_event(item: Inbound, data: dict[str, Any], ctx: Context, now: datetime) -> Decision:
    """A BOUNCE decision for `{"type": "bounce", ...}`; review with the reason when unreadable."""
    del now
    evidence: dict[str, Any] = {"type": "bounce", "at": _text(data, "at", 40)}
    address = normalise(_text(data, "address", 320))
    action = (_text(data, "action", 20) or "failed").lower()
    if address is None:
        return _problem(item, Kind.BOUNCE, "no valid address", evidence)
    if action not in ACTIONS:
        return _problem(item, Kind.BOUNCE, f"action must be one of {', '.join(ACTIONS)}", evidence)
    row = structured_row(address, action, _text(data, "status", 20), _text(data, "diagnostic"))
    if row["status"] is None and action == "failed":
        return _problem(item, Kind.BOUNCE, "a failed bounce needs a status or a diagnostic text", evidence)
    status, reason = row["status"], row["reason"]
    return_path = _text(data, "return_path", 320)
    envelope_item = replace(item, rcpt_tos=(return_path,) if return_path else ())
    rows, envelope, certain = apply_envelope(envelope_item, [row], None, ctx)
    if not return_path:
        envelope["return_path"] = {"form": "upstream"}
    actions = actions_from_rows(rows, ref=_text(data, "message_id", 300))
    evidence.update(recipients=rows, **envelope)
    why = f"upstream bounce: 1 {action} ({status or 'no status'} {reason})"
    return Decision(item_id=item.id, kind=Kind.BOUNCE, actions=actions, reason=why, verified=certain,
                    source="queue", evidence=evidence)


def decide_complaint_event(item: Inbound, data: dict[str, Any], ctx: Context, now: datetime) -> Decision:
    """A COMPLAINT decision for `{"type": "complaint", ...}`, decided as an ARF report would be."""
    evidence: dict[str, Any] = {"type": "complaint", "at": _text(data, "at", 40)}
    address = _text(data, "address", 320)
    if address is not None and normalise(address) is None:
        return _problem(item, Kind.COMPLAINT, "address is not a valid address", evidence)
    feedback_type = (_text(data, "feedback_type", 40) or "abuse").lower()
    unit = _text(data, "unit", 64)
    if unit is not None and unit not in ctx.units:
        return _problem(item, Kind.COMPLAINT, f"unknown unit {unit!r}", evidence)
    original = Original(return_path=_text(data, "return_path", 320),
                        list_unsubscribe=_text(data, "list_unsubscribe"),
                        list_id=_text(data, "list_id", 300), message_id=_text(data, "message_id", 300))
    report = ArfReport(form="upstream", feedback_type=feedback_type,
                       original_rcpt_to=(address,) if address else (), original=original, unit=unit)
    decision = decide_complaint(item, report, ctx, now)
    return replace(decision, source="queue", evidence={**evidence, **decision.evidence})
