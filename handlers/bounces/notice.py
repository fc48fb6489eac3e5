"""Delivery notices that no bounce reader could read: recorded, never read as replies.

A message from a mail system (MAILER-DAEMON, postmaster, "Mail Delivery Subsystem")
that says by its subject, its X-Failed-Recipients or its structure (a delivery-status or
feedback-report part anywhere inside it, or a `report-type` parameter, RFC 6522 section 3)
that it is a delivery notice, but in which handlers.bounces.dsn and handlers.bounces.text
found no recipient, is still machine mail: no person wrote it, so it is not an auto-reply
and not an emailed request. Reading it as a reply would cost the reply reader's phrase
search and could only ever end in "from a mail system, not a person".

A human answer to a notice ("Re: Undeliverable: ...", a postmaster writing back) keeps
its reply prefix and is left to the reply reader, as is anything not from a mail system.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from handlers.bounces import patterns
from handlers.bounces.original import STATUS_TYPES
from handlers.context import Context
from handlers.mail.message import content_param, content_type, header_text, iter_parts, part_text
from handlers.model import Decision, Inbound, Kind
from handlers.replies.reply import FORWARD_PREFIX, REPLY_PREFIX

REPORT_TYPES = STATUS_TYPES | {"message/feedback-report", "multipart/report"}
MAX_TEXT = 4000     # characters of the first text part searched for failure wording


@dataclass(frozen=True)
class UnreadNotice:
    """A mail system's delivery notice that names no recipient we could read, and why it is one."""

    sign: str
    subject: str | None = None
    from_: str | None = None


def read_unread_notice(msg: Message) -> UnreadNotice | None:
    """A delivery notice from a mail system that the bounce readers left (see the module
    docstring), or None. Runs after them in handlers.classify.READERS. Never raises."""
    try:
        from_ = header_text(msg, "From") or ""
        if not patterns.BOUNCE_FROM.search(from_[:500]):
            return None
        subject = " ".join((header_text(msg, "Subject") or "").split())[:500]
        if REPLY_PREFIX.match(subject) or FORWARD_PREFIX.match(subject):
            return None
        sign = _sign(msg, subject)
        return UnreadNotice(sign, subject or None, from_[:300] or None) if sign else None
    except RecursionError:
        return None


def _sign(msg: Message, subject: str) -> str | None:
    if header_text(msg, "X-Failed-Recipients"):
        return "X-Failed-Recipients"
    if content_param(msg, "report-type"):
        return "report-type parameter"
    if patterns.BOUNCE_SUBJECT.search(subject):
        return "delivery notice subject"
    for part, _parent in iter_parts(msg, into_messages=True):
        if content_type(part) in REPORT_TYPES:
            return f"a {content_type(part)} part"
    # The notice's own first text (not a returned original's): its words say it failed.
    text = next((part for part, _parent in iter_parts(msg) if content_type(part) in ("text/plain", "text/html")), None)
    if text is not None and patterns.FAILURE_PHRASE.search(part_text(text)[:MAX_TEXT]):
        return "failure wording"
    return None


def decide_unread_notice(item: Inbound, notice: UnreadNotice, ctx: Context, now: datetime) -> Decision:
    """An UNKNOWN decision with no action (as a multipart/report without a status part
    always was), whose reason says what made the message a notice. Recorded (the event
    keeps the message), not sent to review: nothing in it could be acted on, and nobody
    asked for anything."""
    del ctx, now
    return Decision.ignore(item.id, Kind.UNKNOWN, source=item.source,
                           reason=f"delivery notice from a mail system ({notice.sign}), but no recipient could "
                                  "be read: recorded, not acted on",
                           evidence={"report_type": "unread", "recipients": [], "sign": notice.sign,
                                     "subject": notice.subject})
