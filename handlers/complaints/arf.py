"""Spam complaints: RFC 5965 Abuse Reporting Format reports to complaint decisions.

`read_arf` turns a parsed message into an `ArfReport`, or None when it is not a
feedback report. `decide_complaint` turns the report into a `Decision`:

* the complained-about recipient comes from `Original-Rcpt-To` (RFC 5965 section
  3.2), else `Removal-Recipient` (RFC 6650 section 7), else our own marks in the
  attached original, because most feedback loops redact the recipient: our VERP
  return path `bounces+local=domain@<bounce domain>` (in `Original-Mail-From` or
  the original's `Return-Path`): signed (`bounces+TOKEN@`, which names the contact
  with certainty) or the unsigned `bounces+local=domain@` form; the signed token in
  the original's `List-Unsubscribe`; Microsoft JMRP's `X-HmXmrOriginalRecipient`; and
  finally the original's `To` when it is exactly one mailbox. With none of those,
  the original's `X-NV-Recipient-Id` (the sending system's id for the recipient)
  names the contact: the actions carry it as `recipient_id` and apply() acts on the
  contact imported with it (none imported: nothing changes, the event records it);
* the unit comes from a signed return path, else the original's `List-Id` (RFC 2919)
  matched against the units' `list_ids`, else its `From` against their
  `from_addresses`, else the signed tokens of its own headers, else the unit key in
  our `Feedback-ID`; with none, all units;
* actions: SUPPRESS (plan records reason "complaint") and UNSUBSCRIBE of that
  unit's email. Feedback-Type `opt-out` unsubscribes without suppressing;
  `not-spam` and `auth-failure` (RFC 6591: about authentication, not about the
  recipient) change nothing and are recorded.

Whose report is believed (issue 22): a report (ARF, JMRP or SES) is acted on only
when it comes from a configured feedback loop (`complaints.fbl_sources`), proven by a
DKIM signature of that source that verifies here (`authenticate_source`, with the
public key from a lookup function the caller passes in: handlers do no DNS) or by a
dkim=pass or dmarc=pass for it in our own MTA's Authentication-Results. Any other
report goes to review with its proposed actions kept in evidence (`hold_unproven`).
Apple's unsubscribe message is the person's own request and is not held.

Two non-ARF forms that carry the same meaning are read too: Apple Mail's
`X-Apple-Unsubscribe: true` message (an opt-out sent by the mail client) and an
Amazon SES complaint notification (JSON with `notificationType: Complaint`).
A report we cannot read (no feedback part, no Feedback-Type, no recipient) is
decided with review=True and no actions. Never raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.message import Message
from typing import Any

from handlers.mail.addresses import normalise
from handlers.bounces.envelope import Envelope, EnvelopeForm, TokenMark, bounce_tag, find_token, unsigned_verp
from handlers.bounces.envelope import attribute_unit as attribute_original_unit
from handlers.mail.from_header import parse_mailbox, read_sender
from handlers.mail.message import (
    clean_text,
    content_param,
    content_type,
    decode_bytes,
    header_text,
    iter_parts,
    payload_bytes,
    parse_headers,
    payload_parts,
    raw_items,
    unfold,
)
from handlers.model import ALL, Action, ActionType, Decision, Inbound, Kind
from handlers.bounces.ses import notification
from handlers.replies.trust import passing_domains
from handlers.context import ComplaintScope, Context

FEEDBACK_TYPES = ("message/feedback-report",)
# Where the reported message (or its headers) is attached: RFC 5965 section 2 (c);
# "text/rfc822-header" (singular) occurs in the wild (sisimai arf-12).
ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers",
                  "message/global", "message/global-headers")
MAX_FIELDS = 200          # fields read from one feedback part
MAX_RECIPIENTS = 100      # complained-about recipients acted on from one report
MAX_VALUE = 500
_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)\Z")
_LIST_ID = re.compile(r"<([^<>\s]+)>")
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?", re.IGNORECASE)
# A complaint only suppresses for these types (RFC 5965 section 7.3). A missing
# Feedback-Type in an otherwise readable report is treated as abuse.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
NO_ACTION_TYPES = frozenset({"not-spam", "auth-failure", "dkim", "dmarc"})


@dataclass(frozen=True)
class Original:
    """Headers of the reported message, as plain decoded strings (None when absent)."""

    to: str | None = None
    from_: str | None = None
    return_path: str | None = None
    list_id: str | None = None
    recipient_id: str | None = None          # X-NV-Recipient-Id, set by our senders
    feedback_id: str | None = None
    message_id: str | None = None
    jmrp_recipient: str | None = None        # X-HmXmrOriginalRecipient (Microsoft JMRP)
    received_for: tuple[str, ...] = ()
    list_unsubscribe: str | None = None      # ours carries a signed token

    def to_json(self) -> dict[str, Any]:
        return {"to": self.to, "from": self.from_, "return_path": self.return_path, "list_id": self.list_id,
                "recipient_id": self.recipient_id, "feedback_id": self.feedback_id,
                "message_id": self.message_id, "list_unsubscribe": self.list_unsubscribe}


@dataclass(frozen=True)
class ArfReport:
    """One feedback report. `problem` is set when it is not readable enough to act on."""

    form: str                                   # "arf", "jmrp", "apple-unsubscribe", "ses", "upstream"
    feedback_type: str | None = None
    user_agent: str | None = None
    original_rcpt_to: tuple[str, ...] = ()
    removal_recipient: tuple[str, ...] = ()
    original_mail_from: str | None = None
    arrival_date: str | None = None
    source_ip: str | None = None
    incidents: str | None = None
    reported_domain: tuple[str, ...] = ()
    original: Original | None = None
    sender: str | None = None                   # the strict From of the report itself (Apple form)
    problem: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())
    unit: str | None = None                     # the unit the report itself names (upstream events)


# --------------------------------------------------------------------------- reading


def read_arf(msg: Message) -> ArfReport | None:
    """Read a feedback report from a parsed message, or return None.

    Recognised: a `message/feedback-report` part anywhere in the multipart tree
    (RFC 5965 section 2; not inside attached messages); a `multipart/report` whose
    `report-type` is `feedback-report` but has no such part (returned with
    `problem`, so it is reviewed, not ignored); Microsoft JMRP (a message/rfc822
    part carrying X-HmXmrOriginalRecipient); Apple's X-Apple-Unsubscribe message;
    an Amazon SES complaint notification. Anything else returns None. Never raises.
    """
    try:
        return _read(msg)
    except RecursionError:
        return None


# Microsoft JMRP's subject (its reports are multipart/mixed, not RFC 5965): "complaint
# about message from 192.0.2.1". A forwarder's "Fwd:" copy is read from its attachment.
_JMRP_SUBJECT = re.compile(r"\A\s*complaint about message from\b", re.IGNORECASE)
_JMRP_INLINE = re.compile(r"^X-HmXmrOriginalRecipient[ \t]*:", re.IGNORECASE | re.MULTILINE)
_JMRP_INLINE_SUBJECT = re.compile(r"^[ \t>]*Subject:[ \t]*(?:(?:fwd?|fw)\s*:\s*){0,5}complaint about message from\b",
                                  re.IGNORECASE | re.MULTILINE)
_HEADER_BLOCK_START = re.compile(r"^(?:Return-Path|Received)[ \t]*:", re.IGNORECASE | re.MULTILINE)
MAX_INLINE_SCAN = 64_000


def _read(msg: Message, forwarded: bool = False) -> ArfReport | None:
    report = _read_one(msg)
    if report is not None or forwarded:
        return report
    # A report forwarded by a mailbox owner or a postmaster (issue 21): attached as
    # message/rfc822 (RFC 5965 or JMRP inside), or pasted into the forwarder's text.
    for part, _parent in iter_parts(msg):
        if part is msg or content_type(part) != "message/rfc822":
            continue
        inner = payload_parts(part)
        if inner and _looks_like_report(inner[0]) and (found := _read(inner[0], forwarded=True)) is not None \
                and found.form in ("arf", "jmrp"):
            return replace(found, extra=(*found.extra, ("forwarded-by", _clip(header_text(msg, "From")) or "")))
        break
    return _read_inline_jmrp(msg)


def _looks_like_report(msg: Message) -> bool:
    """An attached message that is itself a feedback report (RFC 5965: multipart/report,
    report-type=feedback-report) or a JMRP report (its subject): only those are read as
    forwarded complaints, so a bounce's returned original costs nothing here."""
    if content_type(msg) == "multipart/report":
        return (content_param(msg, "report-type") or "").lower() == "feedback-report"
    return bool(_JMRP_SUBJECT.match(header_text(msg, "Subject") or ""))


def _read_inline_jmrp(msg: Message) -> ArfReport | None:
    """A JMRP report pasted into a forwarder's text/plain body: the original's header
    block follows the report's X-HmXmrOriginalRecipient line (or its JMRP Subject)."""
    for part, _parent in iter_parts(msg):
        if content_type(part) != "text/plain":
            continue
        data = payload_bytes(part)[:MAX_INLINE_SCAN]
        lowered = data.lower()
        if b"x-hmxmroriginalrecipient" not in lowered and b"complaint about message from" not in lowered:
            continue        # cheap: no JMRP pasted here (a quoted-printable copy is not read)
        text = clean_text(decode_bytes(data))
        start = _JMRP_INLINE.search(text)
        if start is None:
            subject = _JMRP_INLINE_SUBJECT.search(text)
            start = _HEADER_BLOCK_START.search(text, subject.end()) if subject is not None else None
        if start is None:
            continue
        headers = parse_headers(text[start.start():].encode("utf-8", "replace"))
        original = _original_of(headers)
        if not any(original.to_json().values()) and not original.jmrp_recipient:
            continue
        return ArfReport(form="jmrp", feedback_type="abuse", original=original,
                         extra=(("forwarded-by", _clip(header_text(msg, "From")) or ""), ("inline", "true")))
    return None


def _read_one(msg: Message) -> ArfReport | None:
    top = content_type(msg)
    feedback = None
    jmrp = None
    for part, _parent in iter_parts(msg):
        kind = content_type(part)
        if kind in FEEDBACK_TYPES:
            feedback = part
            break
        if kind == "message/rfc822" and jmrp is None and _jmrp_recipient(part):
            jmrp = part
    if feedback is not None:
        return _read_feedback(msg, feedback)
    if top == "multipart/report" and content_param(msg, "report-type") == "feedback-report":
        return ArfReport(form="arf", original=_original(msg), problem="feedback report without a feedback part")
    if jmrp is None and _JMRP_SUBJECT.match(header_text(msg, "Subject") or ""):
        # A JMRP report without X-HmXmrOriginalRecipient (redacted): its subject and the
        # attached message say what it is.
        jmrp = next((p for p, _ in iter_parts(msg) if content_type(p) == "message/rfc822"), None)
    if jmrp is not None:
        original = _original(msg)
        return ArfReport(form="jmrp", feedback_type="abuse", original=original)
    if (header_text(msg, "X-Apple-Unsubscribe") or "").strip().lower() == "true":
        sender = read_sender(msg)
        return ArfReport(form="apple-unsubscribe", feedback_type="opt-out", sender=sender.address,
                         problem=None if sender.address else f"From: {sender.problem}")
    return _read_ses(msg)


def _read_feedback(msg: Message, part: Message) -> ArfReport:
    fields = _fields(_part_text(part))
    values: dict[str, list[str]] = {}
    extra: list[tuple[str, str]] = []
    for name, value in fields[:MAX_FIELDS]:
        values.setdefault(name, []).append(value[:MAX_VALUE])
        if name not in _KNOWN and len(extra) < 20:
            extra.append((name, value[:MAX_VALUE]))

    def first(name: str) -> str | None:
        return values.get(name, [None])[0]

    feedback_type = (first("feedback-type") or "").strip().lower() or None
    problem = None
    if not fields:
        problem = "feedback part has no fields"
    elif feedback_type is None:
        problem = "no Feedback-Type (RFC 5965 section 3.1 requires it)"
    return ArfReport(
        form="arf",
        feedback_type=feedback_type,
        user_agent=first("user-agent"),
        original_rcpt_to=tuple(values.get("original-rcpt-to", [])),
        removal_recipient=tuple(values.get("removal-recipient", [])),
        original_mail_from=first("original-mail-from"),
        arrival_date=first("arrival-date") or first("received-date"),
        source_ip=first("source-ip"),
        incidents=first("incidents"),
        reported_domain=tuple(values.get("reported-domain", [])),
        original=_original(msg),
        problem=problem,
        extra=tuple(extra),
    )


_KNOWN = frozenset({"feedback-type", "user-agent", "version", "original-rcpt-to", "removal-recipient",
                    "original-mail-from", "arrival-date", "received-date", "source-ip", "incidents",
                    "reported-domain", "reported-uri", "authentication-results", "original-envelope-id",
                    "reporting-mta", "source-port", "delivery-result", "auth-failure", "identity-alignment"})


def _part_text(part: Message) -> str:
    """The feedback part as text: the parser stores message/* bodies as sub-messages."""
    subs = payload_parts(part)
    if not subs:
        return decode_bytes(payload_bytes(part))
    texts = []
    for sub in subs:
        lines = [f"{k}: {v}" for k, v in raw_items(sub)]
        if not payload_parts(sub):
            body = decode_bytes(payload_bytes(sub)).strip("\r\n")
            if body:
                lines.append(body)
        texts.append("\n".join(lines))
    return clean_text("\n".join(texts))


def _fields(text: str) -> list[tuple[str, str]]:
    """RFC 5322-style fields of the feedback part; continuation lines unfolded."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and out:
            out[-1][1] = f"{out[-1][1]} {line.strip()}"
            continue
        match = _FIELD.match(line)
        if match:
            out.append([match.group(1).lower(), match.group(2).strip()])
    return [(n, v) for n, v in out]


def _jmrp_recipient(part: Message) -> str | None:
    for sub in payload_parts(part)[:1]:
        value = header_text(sub, "X-HmXmrOriginalRecipient")
        if value:
            return value
    return None


def _original(msg: Message) -> Original | None:
    """Headers of the first attached original (message/rfc822 or a headers part)."""
    for part, _parent in iter_parts(msg):
        kind = content_type(part)
        if part is msg or kind not in ORIGINAL_TYPES:
            continue
        subs = payload_parts(part)
        if subs:
            headers = subs[0]
        else:
            data = payload_bytes(part) or clean_text(str(part.get_payload() or "")).encode("utf-8", "replace")
            headers = parse_headers(data)
        return _original_of(headers)
    return None


def _original_of(headers: Message) -> Original:
    """The identifying headers of a reported message's header block."""
    received = []
    for name, value in raw_items(headers):
        if name.lower() == "received":
            received += _RECEIVED_FOR.findall(unfold(value))
    return Original(
        to=header_text(headers, "To"),
        from_=header_text(headers, "From"),
        return_path=header_text(headers, "Return-Path"),
        list_id=header_text(headers, "List-Id"),
        recipient_id=header_text(headers, "X-NV-Recipient-Id"),
        feedback_id=header_text(headers, "Feedback-ID"),
        message_id=header_text(headers, "Message-ID"),
        jmrp_recipient=header_text(headers, "X-HmXmrOriginalRecipient"),
        received_for=tuple(received[:10]),
        list_unsubscribe=_clip(header_text(headers, "List-Unsubscribe")),
    )


def _read_ses(msg: Message) -> ArfReport | None:
    data = notification(msg)
    if data is None or data.get("notificationType") != "Complaint":
        return None
    complaint = data.get("complaint") if isinstance(data.get("complaint"), dict) else {}
    rcpts = []
    for row in complaint.get("complainedRecipients") or []:
        if isinstance(row, dict) and isinstance(row.get("emailAddress"), str):
            rcpts.append(row["emailAddress"])
    kind = complaint.get("complaintFeedbackType")
    return ArfReport(form="ses", feedback_type=str(kind).lower() if isinstance(kind, str) else "abuse",
                     original_rcpt_to=tuple(rcpts[:MAX_RECIPIENTS]),
                     problem=None if rcpts else "SES complaint without complainedRecipients")


# --------------------------------------------------------------------------- deciding


def _clip(value: str | None) -> str | None:
    return value[:MAX_VALUE * 2] if value else value


def verp_address(value: str | None, ctx: Context) -> str | None:
    """The recipient encoded in our unsigned VERP return path, or None.

    `bounces+local=domain@<bounce domain>` (DESIGN.md interfaces) decodes to
    `local@domain`. Only our own bounce local part and domain count: someone else's
    VERP says nothing about our recipients.
    """
    tag = bounce_tag(value, ctx)
    return unsigned_verp(tag) if tag else None


def token_mark(report: ArfReport, ctx: Context) -> TokenMark | None:
    """Our signed return path (Original-Mail-From, the original's Return-Path), else the
    signed token of the original's List-Unsubscribe; or None."""
    original = report.original
    return find_token(((report.original_mail_from, "signed return path in Original-Mail-From"),
                       (original.return_path if original else None, "signed return path of the original")),
                      original.list_unsubscribe if original else None, ctx)


def attribute_unit(original: Original | None, ctx: Context, mark: TokenMark | None = None) -> str | None:
    """The unit that sent the original: a signed token's unit, else List-Id, else From,
    else Feedback-ID; or None."""
    units = ctx.units
    if mark is not None and mark.unit in units:
        return mark.unit
    if original is None:
        return None
    unit, _how = attribute_original_unit(Envelope(EnvelopeForm.NONE), original.to_json(), None, ctx)
    if unit is not None:
        return unit
    if original.feedback_id:
        for piece in original.feedback_id.split(":"):
            if piece.strip().lower() in units:
                return piece.strip().lower()
    return None


def complained_recipients(report: ArfReport, ctx: Context,
                          mark: TokenMark | None = None) -> tuple[list[str], str]:
    """(addresses, where they came from), in the order of preference in the module docstring.

    With a signed return path (`mark.names`), an address found later in the order is
    taken only when the token was issued for it; the contact itself is acted on by the
    caller when none is.
    """
    def clean(values: Any) -> list[str]:
        out = []
        for value in values:
            address = normalise(value)
            if address and address not in out:
                out.append(address)
        return out[:MAX_RECIPIENTS]

    if report.form == "apple-unsubscribe":
        return ([report.sender] if report.sender else []), "From of the unsubscribe message"
    if found := clean(report.original_rcpt_to):
        return found, "Original-Rcpt-To"
    if found := clean(report.removal_recipient):
        return found, "Removal-Recipient"
    original = report.original
    candidates: list[tuple[str, str]] = []
    for value, where in ((report.original_mail_from, "VERP in Original-Mail-From"),
                         (original.return_path if original else None, "VERP in the original's Return-Path")):
        if (address := verp_address(value, ctx)) is not None:
            candidates.append((address, where))
    if original is not None and original.jmrp_recipient:
        candidates += [(a, "X-HmXmrOriginalRecipient") for a in clean([original.jmrp_recipient])]
    if original is not None and original.to:
        address = parse_mailbox(original.to).address
        if address:
            candidates.append((address, "the original's To"))
    if mark is not None and mark.names is not None:
        candidates = [(a, f"{where}, named by the {mark.where}") for a, where in candidates if mark.names(a)]
    if candidates:
        return [candidates[0][0]], candidates[0][1]
    return [], "none"


def decide_complaint(item: Inbound, report: ArfReport, ctx: Context, now: datetime) -> Decision:
    """Turn a feedback report into a COMPLAINT decision; see the module docstring.

    Odd input: a report with `problem` set, or one whose recipient cannot be
    found, gives review=True and no actions, with the recipient id (if any) in
    evidence. Never raises.
    """
    original = report.original
    mark = token_mark(report, ctx) if report.form != "apple-unsubscribe" else None
    recipients, where = complained_recipients(report, ctx, mark)
    unit = report.unit or attribute_unit(original, ctx, mark)
    contact_id = None
    if not recipients and mark is not None:
        # Redacted, but our signed token names the contact: act on the contact's address.
        contact_id, where = mark.contact_id, mark.where
    certain = mark is not None and (contact_id is not None or (mark.names is not None and mark.names(recipients[0])))
    recipient_id = original.recipient_id if original is not None else None
    by_recipient_id = not recipients and contact_id is None and bool(recipient_id)
    if by_recipient_id:
        where = "X-NV-Recipient-Id of the original (a contact imported with that recipient_id)"
    # Our own header outweighs the original's To, which feedback loops often rewrite:
    # apply() takes the contact with that recipient id, and the To only when none has it.
    with_rid = by_recipient_id or (bool(recipient_id) and where == "the original's To")
    evidence: dict[str, Any] = {
        "form": report.form,
        "feedback_type": report.feedback_type,
        "user_agent": report.user_agent,
        "arrival_date": report.arrival_date,
        "source_ip": report.source_ip,
        "incidents": report.incidents,
        "recipients": recipients,
        "recipient_source": where,
        "recipient_id": original.recipient_id if original else None,
        "token_contact_id": mark.contact_id if mark else None,
        "unit": unit,
        "original": original.to_json() if original else None,
    }
    base = dict(item_id=item.id, kind=Kind.COMPLAINT, evidence=evidence, source=item.source, verified=certain)
    if report.problem:
        return Decision(reason=f"unreadable feedback report: {report.problem}", review=True, **base)
    feedback_type = report.feedback_type or "abuse"
    if feedback_type in NO_ACTION_TYPES:
        return Decision(reason=f"feedback report of type {feedback_type}: not a complaint by the recipient",
                        **base)
    if not recipients and contact_id is None and not by_recipient_id:
        return Decision(reason="feedback report names no recipient we can identify", review=True, **base)
    narrow = ctx.complaint_scope is ComplaintScope.UNIT
    units = (unit,) if unit and narrow else ALL
    actions: list[Action] = []
    targets = [(address, None) for address in recipients] or [("", contact_id)]
    rid = recipient_id[:64] if with_rid and recipient_id else None
    for address, contact in targets:
        if feedback_type != "opt-out":
            actions.append(Action(ActionType.SUPPRESS, address, reason="complaint", diagnostic=feedback_type,
                                  contact_id=contact, recipient_id=rid))
        actions.append(Action(ActionType.UNSUBSCRIBE, address,
                              reason="optout" if feedback_type == "opt-out" else "complaint", units=units,
                              channels=("email",), diagnostic=feedback_type, contact_id=contact, recipient_id=rid))
    scope = unit if unit and narrow else "all units"
    return Decision(reason=f"{feedback_type} report ({report.form}); recipient from {where}; "
                           f"unsubscribed from {scope} email", actions=tuple(actions), **base)


# --------------------------------------------------------------------------- whose report


# Forms a third party sends by mail, which anyone could write: acted on only from a
# proven feedback-loop source. Apple's unsubscribe message is the person's own request
# (judged like an emailed opt-out); "upstream" events come from our own queue.
SOURCE_PROVEN_FORMS = frozenset({"arf", "jmrp", "ses"})
MAX_SIGNED_BYTES = 4 * 1024 * 1024     # feedback reports are small; larger ones are not verified
MAX_LINE = 998                          # RFC 5322 section 2.1.1; longer lines are not verified (below)
MAX_SIGNATURES = 3                      # signatures of configured sources tried per report
MIN_KEY_BITS = 1024                     # RFC 8301 section 3.2

# `name` is "selector._domainkey.domain." (RFC 6376 section 3.6.2.1); the answer is the
# TXT record's text, or None when there is none (or DNS failed).
KeyLookup = Callable[[str], "bytes | str | None"]

# dkimpy logs header contents at debug level and lookup failures at error level; those
# carry addresses, which never go to our logs.
_DKIM_LOG = logging.getLogger("unsubd.handlers.arf.dkim")
_DKIM_LOG.addHandler(logging.NullHandler())
_DKIM_LOG.propagate = False
_DKIM_LOG.disabled = True


@dataclass(frozen=True)
class SourceProof:
    """Whether a report comes from a configured feedback loop, and how that is known.

    `source` is the matching `complaints.fbl_sources` entry (None: not proven); `how` is
    "dkim" (a signature verified here), "authentication-results" (our own MTA's), or
    "none"; `bad_signature` is set when a configured source's signature did not verify.
    """

    source: str | None
    how: str
    why: str
    bad_signature: bool = False

    @property
    def proven(self) -> bool:
        return self.source is not None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "how": self.how, "why": self.why, "bad_signature": self.bad_signature}


def _source_entry(domain: str, sender: str | None, sources: tuple[str, ...]) -> str | None:
    """The configured entry a signing (or DMARC-passing) domain proves, or None.

    A domain entry matches that domain and those under it; an address entry needs the
    report's From to be that address and the domain aligned with it (RFC 7489 section
    3.1.1, relaxed: one is the other or under it).
    """
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        return None
    for entry in sources:
        local, at, entry_domain = entry.rpartition("@")
        if not at:
            if domain == entry or domain.endswith("." + entry):
                return entry
        elif sender == entry and (domain == entry_domain or domain.endswith("." + entry_domain)
                                  or entry_domain.endswith("." + domain)):
            return entry
    return None


def _sources(ctx: Context) -> tuple[str, ...]:
    return tuple(ctx.complaints.fbl_sources)


def authenticate_source(raw: bytes, msg: Message, ctx: Context, lookup: KeyLookup | None) -> SourceProof:
    """Whether the report `raw` (parsed as `msg`) comes from a configured feedback loop.

    First our own MTA's Authentication-Results (RFC 8601; only `trusted_authserv_ids`):
    a dkim=pass or dmarc=pass for a configured source proves it. Else the report's own
    DKIM-Signature fields (RFC 6376) whose d= is a configured source, at most
    MAX_SIGNATURES of them, verified with dkimpy and the public key `lookup` returns.
    Pure as far as `lookup` is: no DNS here.

    Odd input gives an unproven SourceProof with the reason, never an exception: no
    sources configured, no signature of a source, no `lookup` (offline), no key, a
    signature that does not verify (`bad_signature`), one with `l=` (it leaves part of
    the body unsigned), a message over MAX_SIGNED_BYTES or with a line longer than
    RFC 5322 section 2.1.1 allows (dkimpy's canonicalisation would cost more than
    linear time on it), or headers dkimpy cannot parse.
    """
    sources = _sources(ctx)
    if not sources:
        return SourceProof(None, "none", "no feedback-loop sources configured (complaints.fbl_sources)")
    sender = read_sender(msg).address
    values = [v for k, v in raw_items(msg) if k.lower() == "authentication-results"]
    for method, domain, authserv in passing_domains(values, ctx.trusted_authserv_ids):
        if (entry := _source_entry(domain, sender, sources)) is not None:
            return SourceProof(entry, "authentication-results", f"{method}=pass for {domain} by {authserv}")
    claimed = [_tag(v, "d") for k, v in raw_items(msg) if k.lower() == "dkim-signature"]
    if not any(d and _source_entry(d, sender, sources) for d in claimed):
        return SourceProof(None, "none", "no DKIM signature or Authentication-Results of a configured "
                                         "feedback-loop source")
    return _verify_dkim(raw, sender, sources, lookup)


def _tag(value: str, name: str) -> str | None:
    """One tag of a DKIM-Signature value (RFC 6376 section 3.2), lowercased; or None."""
    for part in str(value)[:MAX_VALUE * 8].split(";"):
        key, eq, tag_value = part.partition("=")
        if eq and key.strip().lower() == name:
            return "".join(tag_value.split()).lower()
    return None


def _verify_dkim(raw: bytes, sender: str | None, sources: tuple[str, ...],
                 lookup: KeyLookup | None) -> SourceProof:
    if lookup is None:
        return SourceProof(None, "none", "signed by a configured source, but no key lookup here (offline)")
    if len(raw) > MAX_SIGNED_BYTES:
        return SourceProof(None, "none", f"larger than {MAX_SIGNED_BYTES} bytes: signature not verified")
    if any(len(line) > MAX_LINE + 2 for line in raw.split(b"\n")):
        return SourceProof(None, "none", "a line longer than RFC 5322 allows: signature not verified")
    try:
        import dkim  # dkimpy; imported here so that reading other mail never loads it
        from dkim.util import parse_tag_value

        signer = dkim.DKIM(raw, logger=_DKIM_LOG, minkey=MIN_KEY_BITS)
        signatures = [v for k, v in signer.headers if k.lower() == b"dkim-signature"]
    except Exception as exc:  # noqa: BLE001 - bad headers are data
        return SourceProof(None, "none", f"headers DKIM cannot read ({type(exc).__name__})")
    fetched: list[bool] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | str | None:
        del timeout                  # the caller's lookup keeps its own
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        answer = lookup(text)
        fetched.append(bool(answer))
        return answer

    tried = 0
    failures: list[str] = []
    bad = False
    for index, value in enumerate(signatures):
        try:
            tags = parse_tag_value(value)
        except Exception:  # noqa: BLE001
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
        entry = _source_entry(domain, sender, sources)
        if entry is None:
            continue
        if tried >= MAX_SIGNATURES:
            break
        tried += 1
        if b"l" in tags:
            failures.append(f"d={domain}: l= leaves part of the body unsigned")
            continue
        fetched.clear()
        try:
            ok = signer.verify(idx=index, dnsfunc=dnsfunc)
        except Exception as exc:  # noqa: BLE001 - dkimpy raises for a body hash mismatch, bad fields or keys
            ok, why = False, f"does not verify ({type(exc).__name__})"
        else:
            why = "does not verify" if any(fetched) else "no public key found"
        if ok:
            return SourceProof(entry, "dkim", f"DKIM signature of {domain} verified")
        # A key was there and the signature is wrong, or the signature itself is bad: a
        # forgery in the name of a configured loop (a missing key may be DNS trouble).
        bad = bad or why.startswith("does not verify")
        failures.append(f"d={domain}: {why}")
    return SourceProof(None, "none", "; ".join(failures) or "no usable signature of a configured source",
                       bad_signature=bad)


def hold_unproven(decision: Decision, report: ArfReport, proof: SourceProof) -> Decision:
    """The complaint decision as it may be applied, given whose report it is (issue 22).

    Returns `decision` with `source_proof` in its evidence. A report of a form in
    SOURCE_PROVEN_FORMS whose source is not proven, and that asks for actions, is
    returned with no actions and review=True instead: its proposed actions go into
    evidence (`held_actions`), and `suspect` names why ("complaint_unauthenticated",
    and "complaint_bad_signature" when a configured source's signature failed).
    Other forms, proven reports and reports that change nothing pass unchanged.
    """
    if report.form not in SOURCE_PROVEN_FORMS:
        return decision
    evidence = {**decision.evidence, "source_proof": proof.to_json()}
    if proof.proven or not decision.actions or decision.review:
        return replace(decision, evidence=evidence)
    suspect = ["complaint_unauthenticated"] + (["complaint_bad_signature"] if proof.bad_signature else [])
    evidence.update(held_actions=[a.to_json() for a in decision.actions],
                    suspect=[*evidence.get("suspect", []), *suspect])
    return replace(decision, actions=(), review=True, evidence=evidence,
                   reason=f"{decision.reason}; held for review: not from a proven feedback loop ({proof.why})")
