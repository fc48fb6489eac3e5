"""classify: one inbound item in, one Decision out. Pure, and never raises.

Readers are tried in order; the first that recognises the message decides. Adding a
format (ARF complaints, auto-replies, emailed opt-outs) means adding a row to READERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from handlers.complaints.arf import KeyLookup, authenticate_source, decide_complaint, hold_unproven, read_arf
from handlers.replies.autoreply import decide_auto_reply, read_auto_reply
from handlers.bounces.text import decide_text_bounce, read_bounce
from handlers.bounces.envelope import hold_implausible
from handlers.bounces.notice import decide_unread_notice, read_unread_notice
from handlers.events.click import decide_queue_item
from handlers.bounces.dsn import decide_bounce, read_dsn
from handlers.mail.message import describe_defects, is_unreadable, parse_message
from handlers.model import HIGH, MEDIUM, Decision, Inbound, Kind, confidence_of
from handlers.replies.reply import decide_optout, read_reply
from handlers.bounces.ses import decide_ses, read_ses
from handlers.context import Context

# What makes a report suspect (issue 22), as deciders name it in `evidence["suspect"]`;
# the consumer counts each, and /metrics shows them as unsubd_consumer_suspect_<name>_total.
SUSPECT = ("bounce_forged_return_path", "bounce_implausible_recipients", "complaint_unauthenticated",
           "complaint_bad_signature")

Reader = Callable[[Any], Any | None]
Decider = Callable[[Inbound, Any, Any, datetime], Decision]

# Ordered, first match wins:
#   1. ARF complaints (RFC 5965; also multipart/report, so before DSN), and the
#      JSON notifications of Amazon SES (complaints there, bounces and deliveries next)
#   2. RFC 3464 delivery status reports
#   3. non-standard bounces (MTA text forms), recognised by pattern tables
#   4. delivery notices from a mail system that 2 and 3 could not read: recorded as
#      bounces, so that machine mail never costs the reply reader's phrase search
#   5. auto-replies (RFC 3834 and vendor styles): recorded, never acted on
#   6. human replies: opt-out intent, scope, or an ordinary reply
READERS: tuple[tuple[Reader, Decider], ...] = (
    (read_arf, decide_complaint),
    (read_ses, decide_ses),
    (read_dsn, decide_bounce),
    (read_bounce, decide_text_bounce),
    (read_unread_notice, decide_unread_notice),
    (read_auto_reply, decide_auto_reply),
    (read_reply, decide_optout),
)

# Confidence for deciders that do not weigh their own evidence: a report parsed from
# its RFC 3464 / RFC 5965 structure is surer than a bounce recognised by MTA text.
# Replies and auto-replies set their own (handlers.replies.reply, handlers.replies.autoreply).
READER_CONFIDENCE: dict[Reader, float] = {read_arf: HIGH, read_ses: HIGH, read_dsn: HIGH, read_bounce: MEDIUM}


def warm_up() -> None:
    """Load what the readers otherwise load on first use (the language model), so that no
    message pays for it inside its CPU budget. The parser processes call it at start."""
    from handlers.replies import language

    language.load()


def classify(item: Inbound, ctx: Context, now: datetime, *, dkim_lookup: KeyLookup | None = None) -> Decision:
    """Decide what one inbound item means; never raises.

    Returns the first reader's decision; if no reader recognises the message, an
    UNKNOWN ignore decision (ordinary mail is recorded, not queued for review); if
    the bytes are not a readable message at all (empty, no header fields, parser
    failure), an unreadable decision for review. Any unexpected exception gives an
    unreadable decision whose reason names the exception type. Every decision
    carries `source=item.source`.

    Reports are believed in proportion to their proof (issue 22): a complaint is
    acted on only from a proven feedback-loop source (handlers.complaints.arf.hold_unproven;
    `dkim_lookup` fetches a DKIM public key, see handlers.complaints.arf.KeyLookup; without it
    only our own MTA's Authentication-Results can prove the source), and a bounce that
    names more recipients than one message of ours had goes to review
    (handlers.bounces.envelope.hold_implausible).
    """
    if not isinstance(ctx, Context):     # a programming error, not a message's: loud
        raise TypeError(f"classify needs a handlers.context.Context, not {type(ctx).__name__} "
                        "(build one with Context.from_settings)")
    try:
        if item.source == "queue":
            return _with_confidence(hold_implausible(decide_queue_item(item, ctx, now)), None)
        msg = parse_message(item.raw)
        for read, decide in READERS:
            report = read(msg)
            if report is not None:
                decision = decide(item, report, ctx, now)
                if read is read_arf:
                    decision = hold_unproven(decision, report,
                                             authenticate_source(item.raw, msg, ctx, dkim_lookup))
                decision = hold_implausible(decision)
                return _with_confidence(_with_source(decision, item), read)
        if not item.raw.strip():
            return Decision.unreadable(item.id, reason="empty message", source=item.source)
        if is_unreadable(msg):
            return Decision.unreadable(item.id, reason=f"unreadable: {describe_defects(msg)}",
                                       source=item.source)
        return Decision.ignore(item.id, Kind.UNKNOWN, reason="not a recognised report or request",
                               source=item.source)
    except Exception as exc:  # noqa: BLE001 - bad input is data; a person looks at it
        return Decision.unreadable(item.id, reason=f"classifier error: {type(exc).__name__}",
                                   source=getattr(item, "source", "smtp"))


def _with_confidence(decision: Decision, read: Reader | None) -> Decision:
    # Filled in here so every decision carries a number, and kept in evidence so the
    # event row (and a review item's event) records it.
    value = decision.confidence
    if value is None:
        value = READER_CONFIDENCE.get(read) if read is not None else None
    if value is None:
        value = confidence_of(decision)
    return replace(decision, confidence=value, evidence={**decision.evidence, "confidence": value})


def _with_source(decision: Decision, item: Inbound) -> Decision:
    # A decider may name a more specific source (e.g. "mailto"); otherwise the transport's.
    if decision.source == item.source or decision.source not in ("smtp", ""):
        return decision
    return replace(decision, source=item.source)
