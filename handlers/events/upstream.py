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

    {"type": "sent_counts", "counts": [{"day": "2026-12-06", "unit": "alumni",
     "channel": "email", "count": 12345}, ...], "reported_by": "mailer-1"}

is not about anyone's consent: a sending system says how many messages a unit sent on a
day (the complaint rate's denominator on the console's dashboard). `read_sent_counts`
checks it (the same check as `POST /v1/sent-counts`); `decide_sent_counts_event` makes
an IMPORT decision without actions whose evidence carries the counts, and the consumer
writes them (worker.store.sent_counts) in the transaction that records the event. A
report with any bad entry goes to review, and no count is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from handlers.mail.addresses import normalise
from handlers.complaints.arf import ArfReport, Original, decide_complaint
from handlers.bounces.envelope import actions_from_rows, apply_envelope
from handlers.bounces.dsn import structured_row
from handlers.model import Channel, Decision, Inbound, Kind
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


# Sent counts (see the module's docstring).
SENT_COUNTS = "sent_counts"
MAX_SENT_ENTRIES = 1000           # entries in one report
MAX_SENT_AGE_DAYS = 400           # the oldest day a report may name, counted back from today
MAX_SENT = 10 ** 12               # a count beyond this is a mistake, not a day's mail
SENT_CHANNELS = tuple(c.value for c in Channel)


@dataclass(frozen=True)
class SentReport:
    """Messages `count` sent on `day` by `unit` on `channel`: one entry of a report."""

    day: date
    unit: str
    channel: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "unit": self.unit, "channel": self.channel, "count": self.count}


class BadSentCounts(ValueError):
    """A sent-counts report that cannot be taken; `entry` is the index of the bad entry, if one is."""

    def __init__(self, message: str, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry


def read_sent_counts(data: Any, units: Any, today: date) -> list[SentReport]:
    """The entries of `{"counts": [...]}`, checked; raises BadSentCounts naming the first bad one.

    Each entry needs `day` (an ISO date, YYYY-MM-DD, not after `today` and at most
    MAX_SENT_AGE_DAYS before it), `unit` (a key of `units`), `channel` (one of
    SENT_CHANNELS, default email) and `count` (a whole number >= 0; booleans and
    fractions are refused). An entry named twice in one report is refused too: which
    one was meant cannot be told. Nothing is returned when any entry is bad, so a
    report is taken whole or not at all.
    """
    if not isinstance(data, dict) or not isinstance(data.get("counts"), list):
        raise BadSentCounts("the body must be a JSON object with a list 'counts'")
    entries = data["counts"]
    if not entries:
        raise BadSentCounts("'counts' is empty")
    if len(entries) > MAX_SENT_ENTRIES:
        raise BadSentCounts(f"at most {MAX_SENT_ENTRIES} entries in one report")
    oldest = today - timedelta(days=MAX_SENT_AGE_DAYS)
    out: list[SentReport] = []
    seen: set[tuple[date, str, str]] = set()
    for i, entry in enumerate(entries):
        where = f"counts[{i}]"
        if not isinstance(entry, dict):
            raise BadSentCounts(f"{where} must be an object with day, unit, channel and count", i)
        raw_day, unit = entry.get("day"), entry.get("unit")
        channel, count = entry.get("channel", "email"), entry.get("count")
        try:
            day = date.fromisoformat(raw_day) if isinstance(raw_day, str) and len(raw_day) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise BadSentCounts(f"{where}.day must be a date written YYYY-MM-DD", i)
        if day > today:
            raise BadSentCounts(f"{where}.day {day.isoformat()} is in the future", i)
        if day < oldest:
            raise BadSentCounts(f"{where}.day {day.isoformat()} is more than {MAX_SENT_AGE_DAYS} days ago", i)
        if not isinstance(unit, str) or unit not in units:
            raise BadSentCounts(f"{where}.unit {str(unit)[:64]!r} is not a configured unit", i)
        if channel not in SENT_CHANNELS:
            raise BadSentCounts(f"{where}.channel must be one of {', '.join(SENT_CHANNELS)}", i)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SENT:
            raise BadSentCounts(f"{where}.count must be a whole number from 0 to {MAX_SENT}", i)
        key = (day, unit, channel)
        if key in seen:
            raise BadSentCounts(f"{where} names {day.isoformat()} {unit} {channel} a second time", i)
        seen.add(key)
        out.append(SentReport(day, unit, channel, count))
    return out


def decide_sent_counts_event(item: Inbound, data: dict[str, Any], ctx: Context, now: datetime) -> Decision:
    """An IMPORT decision without actions for `{"type": "sent_counts", ...}`: its evidence
    carries the checked counts for the consumer to write. Review with the reason (and no
    counts) when any entry is bad."""
    reported_by = _text(data, "reported_by", 100) or "queue"
    try:
        counts = read_sent_counts(data, ctx.units, now.date())
    except BadSentCounts as exc:
        return Decision.unreadable(item.id, reason=f"upstream sent counts: {exc}", source="queue",
                                   evidence={"type": SENT_COUNTS, "reported_by": reported_by})
    return Decision(item_id=item.id, kind=Kind.IMPORT, source="queue", verified=True,
                    reason=f"sent counts: {len(counts)} entr{'y' if len(counts) == 1 else 'ies'} "
                           f"from {reported_by}",
                    evidence={"type": SENT_COUNTS, "reported_by": reported_by,
                              SENT_COUNTS: [c.to_json() for c in counts]})
