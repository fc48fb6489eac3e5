"""Delivery status notifications: RFC 3464 reports (and RFC 6533 global ones) to bounce decisions.

`read_dsn` turns a parsed message into a `DsnReport`, or None if the message carries
no delivery-status part. `decide_bounce` turns a report into a `Decision`.

The parser is deliberately tolerant: real MTAs write CR LF or bare LF, fold long
lines, forget the blank line between recipient groups, prefix addresses with
`rfc822;` in any case, and leave junk lines in the report. None of that raises;
it either still reads or yields a recipient without an address, which never leads
to an action.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import Message
from typing import Any

from handlers.mail.addresses import normalise
from handlers.mail.message import (
    clean_text,
    content_type,
    decode_bytes,
    header_text,
    iter_parts,
    payload_bytes,
    payload_parts,
    part_text,
    raw_items,
)
from handlers.bounces import patterns as patterns
from handlers.bounces.envelope import (UNRELATED, actions_from_rows, apply_envelope, drop_forged, drop_unrelated,
                                      forged_original, null_sender, original_ref, relation, sent_to_addresses, verp_hints)
from handlers.bounces.original import (MAX_VALUE, ORIGINAL_TYPES, STATUS_TYPES, ReturnedOriginal, _cut,
                                      addressed_to, returned_original)
from handlers.bounces.reasons import explain, notice_context
from handlers.bounces.status import BounceReason
from handlers.bounces.text import decide_text_bounce, read_bounce
from handlers.model import ActionType, Decision, Inbound, Kind
from handlers.context import Context


# Fields that begin or belong to a per-recipient group (RFC 3464 section 2.3).
RECIPIENT_FIELDS = frozenset({
    "original-recipient", "final-recipient", "action", "status", "remote-mta",
    "diagnostic-code", "last-attempt-date", "final-log-id", "will-retry-until",
})
# Per-message fields (RFC 3464 section 2.2).
MESSAGE_FIELDS = frozenset({
    "original-envelope-id", "reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date",
})

# Action values seen in the wild that are not RFC 3464 section 2.3.3 keywords.
# "deliverable"/"undeliverable" are Postfix address-verification reports
# (sisimai rfc3464-28); "failure" is in flufl dsn_03. Other unknown words are
# treated like a missing Action.
ACTION_ALIASES = {"failure": "failed", "undeliverable": "failed", "deliverable": "delivered",
                  "delay": "delayed",
                  # SendGrid's "Action: expired" when it gave up retrying (lhost-sendgrid-03)
                  "expired": "failed"}
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

# No single DSN we would ever receive reports on this many recipients (unsubd sends
# one recipient per message); beyond it groups are dropped and a note says so.
MAX_RECIPIENTS = 1000
MAX_NOTICE = 16000      # characters kept of the human-readable part
MAX_EXTRA = 20          # non-standard fields kept per group, for evidence

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)\Z", re.DOTALL)
_TYPED = re.compile(r"\s*([A-Za-z][A-Za-z0-9.+_-]*)\s*;\s*(.*)\Z", re.DOTALL)
# An RFC 3463 enhanced status code: class.subject.detail. The syntax allows a 1-3
# digit subject, but only subjects 0-7 are defined (and registered with IANA), so one
# digit is required: that keeps version numbers like "Exim 4.97.1" out. The
# look-arounds keep it from matching inside IP addresses ("192.0.2.66") while
# allowing "550-5.1.1", "(#5.1.1)" and a sentence-ending "5.1.1.".
_STATUS_CODE = re.compile(r"(?<!\d)(?<!\d\.)([245])\.([0-7])\.(\d{1,3})(?!\d|\.\d)")
# An RFC 5321 reply code at the start of an smtp diagnostic: "550 ...", "550-...".
_REPLY_CODE = re.compile(r"\s*([245])\d\d(?:[ \t-]|\Z)")
# Amazon SES wraps the remote server's reply in its own code and wording:
# "5.1.0 - Unknown address error 550-'5.7.1 <...>... Access denied' (delivery attempts: 0)".
# The quoted reply is what the receiving server said; SES's words describe only its class.
_SES_WRAPPED = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3}) - [A-Za-z ]{1,60} ([245]\d\d)[- ]'(.*)'", re.S)
# RFC 6533 section 3: non-ASCII in a utf-8 address type is written \x{HHHH}.
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient group of a report (RFC 3464 section 2.3), values as written.

    Values are unfolded and trimmed to MAX_VALUE characters; a missing field is None.
    `address_type` and `raw_address` come from Final-Recipient, or from
    Original-Recipient when Final-Recipient is absent (`address_field` says which).
    """

    final_recipient: str | None = None
    original_recipient: str | None = None
    action: str | None = None
    status: str | None = None
    diagnostic_code: str | None = None
    remote_mta: str | None = None
    last_attempt_date: str | None = None
    will_retry_until: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def address_field(self) -> str | None:
        """The field the recipient's address is read from, or None if neither is present."""
        if self.final_recipient is not None:
            return "final-recipient"
        if self.original_recipient is not None:
            return "original-recipient"
        return None


@dataclass(frozen=True)
class DsnReport:
    """A delivery-status report: per-message fields, recipient groups, returned headers.

    `notes` lists tolerated oddities ("junk lines ignored", "recipient groups truncated").
    """

    report_type: str
    reporting_mta: str | None = None
    arrival_date: str | None = None
    original_envelope_id: str | None = None
    dsn_gateway: str | None = None
    received_from_mta: str | None = None
    recipients: tuple[DsnRecipient, ...] = ()
    original: ReturnedOriginal | None = None
    extra: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    text_notice: Any = None     # a handlers.bounces.text.TextBounce when no group has a usable address
    notice: str = ""            # the human-readable first part, cut to MAX_NOTICE characters
    addressed_to: tuple[str, ...] = ()  # the bounce's own To, Delivered-To, X-Original-To, Envelope-To (raw)
    return_path: str | None = None      # the bounce's own Return-Path header, as written
    from_: str | None = None            # the bounce's own From header, as written


# --------------------------------------------------------------------------- reading


def read_dsn(msg: Message) -> DsnReport | None:
    """Read an RFC 3464 delivery-status report from a parsed message, or return None.

    Looks for a `message/delivery-status` part (RFC 3464 section 2.1) or a
    `message/global-delivery-status` part (RFC 6533 section 6.2) anywhere in the
    message's multipart tree, not inside attached messages: normally the second
    part of a `multipart/report; report-type=delivery-status` (RFC 6522), but some
    MTAs wrap it in `multipart/mixed`, so the container type is not checked. A
    message without such a part returns None, including a multipart/report that
    lacks one. A status part with no readable recipient group returns a report
    with no recipients; if the human-readable notice then names failed recipients
    (handlers.bounces.text), they are kept in `text_notice`. A bounce-like message whose
    MIME structure was lost (no boundary, a boundary that never occurs, a report
    pasted into a text part) but whose text carries the report's fields at line
    starts is read from that text (see `_report_in_text`). Never raises.
    """
    try:
        found = _find_status_part(msg)
        if found is None:
            return _wrapped_report(msg) or _report_in_text(msg)
        part, parent = found
        text, notes = _status_text(part)
        report = _parse_status_text(text, report_type=content_type(part).split("/", 1)[1], notes=notes)
        changes: dict[str, Any] = {"addressed_to": addressed_to(msg), "return_path": header_text(msg, "Return-Path"),
                                   "from_": header_text(msg, "From")}
        original = _returned_original(parent if parent is not None else msg, part)
        if original is not None:
            changes["original"] = original
        notice = _notice_text(parent if parent is not None else msg, part)
        if notice:
            changes["notice"] = notice
        report = replace(report, **changes)     # one copy of the report, not three
        if not any(recipient_address(r)[0] for r in report.recipients):
            notice = read_bounce(msg, inside_report=True)
            if notice is not None:
                report = replace(report, text_notice=notice, notes=(*report.notes, "recipients read from the notice text"))
        return report
    except RecursionError:
        return None


def _wrapped_report(msg: Message) -> DsnReport | None:
    """A mail system's report attached whole (message/rfc822) to a notice of the same
    kind, with no status part of its own: a gateway that wraps the report it was given
    in multipart/mixed (often still labelled `report-type=delivery-status`). Read from
    the attached report, once (it has its own status part, so it is not unwrapped
    again); None when the notice is not from a mail system or nothing attached is one."""
    if not patterns.BOUNCE_FROM.search(header_text(msg, "From") or ""):
        return None
    for part, _parent in iter_parts(msg):
        if content_type(part) not in ("message/rfc822", "message/global"):
            continue
        inner = payload_parts(part)
        if (inner and content_type(inner[0]) == "multipart/report" and _find_status_part(inner[0]) is not None
                and patterns.BOUNCE_FROM.search(header_text(inner[0], "From") or "")):
            report = read_dsn(inner[0])
            if report is not None:
                return replace(report, notes=(*report.notes, "read from the report attached to this notice"))
    return None


# Where a report's fields start in plain text: the per-message or a recipient field at
# the start of a line (a quoted "> Final-Recipient:" is someone's reply, not a report).
_REPORT_START = re.compile(r"^(?:Reporting-MTA|Final-Recipient|Original-Recipient)[ \t]*:",
                           re.IGNORECASE | re.MULTILINE)
_BLOCK_SPLIT = re.compile(r"\r?\n[ \t]*\r?\n")
MAX_TEXT_SCAN = 64_000


def _report_in_text(msg: Message) -> DsnReport | None:
    """RFC 3464 fields found in the text of a bounce whose report part was lost, or None.

    The fields of a report survive when its MIME wrapping does not: a multipart/report
    without a boundary parameter (sisimai rfc3464-04, lhost-messagingserver-03), a
    whole bounce pasted into a text/plain message (lhost-postfix-49, lhost-sendmail-54).
    Read only when the message looks like a bounce (daemon sender, bounce subject or
    null Return-Path) and the text has a Final-Recipient with an address; the blocks
    read are those, from the first field on, that contain report fields, so the
    returned original's headers after them are left out.
    """
    from_ = header_text(msg, "From") or ""
    subject = header_text(msg, "Subject") or ""
    if not (patterns.BOUNCE_FROM.search(from_) or patterns.BOUNCE_SUBJECT.search(subject)
            or (header_text(msg, "Return-Path") or "").strip() == "<>"):
        return None
    for part, _parent in iter_parts(msg):
        if content_type(part).startswith("message/") or payload_parts(part):
            continue
        data = payload_bytes(part)[:MAX_TEXT_SCAN]
        if b"-recipient" not in data.lower():   # cheap: no Final-/Original-Recipient field
            continue
        text = clean_text(decode_bytes(data))
        start = _REPORT_START.search(text)
        if start is None:
            continue
        kept: list[str] = []
        for block in _BLOCK_SPLIT.split(text[start.start():]):
            names = {line.split(":", 1)[0].strip().lower() for line in block.splitlines() if ":" in line}
            if names & (RECIPIENT_FIELDS | MESSAGE_FIELDS):
                kept.append(block)
            elif kept:
                break
        report = _parse_status_text("\n\n".join(kept), report_type="delivery-status",
                                    notes=["report fields read from the message text (no delivery-status part)"])
        if any(recipient_address(r)[0] for r in report.recipients):
            return replace(report, notice=text[:start.start()][-MAX_NOTICE:].replace("\r\n", "\n"),
                           addressed_to=addressed_to(msg),
                           return_path=header_text(msg, "Return-Path"),
                           from_=header_text(msg, "From"))
    return None


def _notice_text(container: Message, status_part: Message) -> str:
    """The first text/plain part of the report (RFC 6522 section 3: the human-readable part)."""
    for part, _parent in iter_parts(container):
        if part is status_part:
            break
        if content_type(part) == "text/plain":
            return part_text(part)[:MAX_NOTICE].replace("\r\n", "\n")
    return ""


def _notice_line(notice: str, address: str) -> str:
    """The notice's line that names `address`, with its indented continuation lines; "" if none."""
    at = notice.lower().find(address.lower())
    if at < 0:
        return ""
    start = notice.rfind("\n", 0, at) + 1
    lines = notice[start:start + 2000].split("\n")
    kept = [lines[0]]
    for line in lines[1:6]:
        if not line[:1].isspace() or not line.strip():
            break
        kept.append(line.strip())
    return " ".join(kept).strip()[:MAX_VALUE]


def _find_status_part(msg: Message) -> tuple[Message, Message | None] | None:
    if content_type(msg) in STATUS_TYPES:      # a bare report without the multipart wrapper
        return msg, None
    if not content_type(msg).startswith("multipart/"):
        return None
    for part, parent in iter_parts(msg):
        if content_type(part) in STATUS_TYPES:
            return part, parent
    return None


def _status_text(part: Message) -> tuple[str, list[str]]:
    """The report part as text, whichever way the `email` package stored it.

    For `message/delivery-status` the parser splits the body at blank lines and
    stores each block as a header-only sub-message; a block whose lines stop looking
    like headers keeps the rest as its body. `message/global-delivery-status` is
    treated as an ordinary `message/*`: one sub-message whose headers are the first
    block and whose body is everything after it. Both are turned back into text here.
    """
    notes: list[str] = []
    blocks = payload_parts(part)
    if not blocks:
        return decode_bytes(payload_bytes(part)), notes
    is_ds = content_type(part) == "message/delivery-status"
    texts = []
    for block in blocks:
        lines = [f"{name}: {value}" for name, value in raw_items(block)]
        body = _block_body(block)
        if body:
            # Inside a delivery-status block the body is whatever followed a line that
            # was not a header, up to the next blank line: same block, no blank line.
            lines.append(("" if is_ds else "\n") + body if lines else body)
        texts.append("\n".join(lines))
    text = clean_text("\n\n".join(texts))
    cte = (header_text(part, "Content-Transfer-Encoding") or "").lower()
    if cte in ("base64", "quoted-printable"):
        # The parser does not undo the transfer encoding of message/* parts before
        # splitting them (RFC 2046 forbids encoding them, RFC 6533 allows it for the
        # global variant), so undo it on the reconstructed text.
        decoded = _undo_transfer_encoding(text, cte)
        if decoded is not None:
            notes.append(f"{cte} transfer encoding undone")
            text = decoded
    return text, notes


def _block_body(block: Message) -> str:
    # get_payload() without decode would turn 8-bit bytes (UTF-8 in a global report)
    # into U+FFFD; the bytes themselves decode correctly.
    if payload_parts(block):
        return ""
    return decode_bytes(payload_bytes(block)).strip("\r\n")


def _undo_transfer_encoding(text: str, cte: str) -> str | None:
    raw = text.encode("utf-8", "replace")
    try:
        data = base64.b64decode(b"".join(raw.split())) if cte == "base64" else quopri.decodestring(raw)
    except (binascii.Error, ValueError):
        return None
    return decode_bytes(data)


def _parse_status_text(text: str, *, report_type: str, notes: list[str]) -> DsnReport:
    """Parse the report body: header-like blocks separated by blank lines.

    RFC 3464 section 2.1: one per-message block, then one block per recipient. This
    reads line by line instead: continuation lines (leading white space) extend the
    previous field; per-message fields are recognised by name wherever they are, so
    a missing blank line after them does no harm; a recipient field that already
    occurs in the current group starts a new group, so a missing blank line between
    recipients does no harm either. Lines that are not fields are counted and
    ignored. CR LF, bare LF and bare CR line ends are all accepted.
    """
    per_message: dict[str, list[str]] = {}  # each field is a mutable [name, value]
    message_extra: list[list[str]] = []
    groups: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    last: list[str] | None = None
    junk = 0
    split_groups = 0
    for line in text.splitlines():
        if not line.strip():
            current, last = None, None
            continue
        if line[0] in " \t":
            if last is not None:
                last[1] = f"{last[1]} {line.strip()}" if last[1] else line.strip()
            else:
                junk += 1
            continue
        match = _FIELD.match(line)
        if match is None:
            junk += 1
            last = None
            continue
        field = [match.group(1).lower(), match.group(2).strip()]
        name = field[0]
        if name in RECIPIENT_FIELDS:
            if current is None or any(f[0] == name for f in current):
                if current is not None:
                    split_groups += 1
                current = _new_group(current, name)
                groups.append(current)
            current.append(field)
        elif name in MESSAGE_FIELDS and name not in per_message:
            per_message[name] = field
        elif current is not None:
            current.append(field)
        else:
            message_extra.append(field)
        last = field
    if junk:
        notes.append(f"{junk} line(s) that are not fields ignored")
    if split_groups:
        notes.append(f"{split_groups} recipient group(s) not separated by a blank line")
    if len(groups) > MAX_RECIPIENTS:
        notes.append(f"only the first {MAX_RECIPIENTS} of {len(groups)} recipient groups read")
        groups = groups[:MAX_RECIPIENTS]

    def message_field(name: str) -> str | None:
        return _cut(per_message[name][1]) if name in per_message else None

    return DsnReport(
        report_type=report_type,
        reporting_mta=message_field("reporting-mta"),
        arrival_date=message_field("arrival-date"),
        original_envelope_id=message_field("original-envelope-id"),
        dsn_gateway=message_field("dsn-gateway"),
        received_from_mta=message_field("received-from-mta"),
        recipients=tuple(_recipient(group) for group in groups),
        extra=tuple((n, _cut(v) or "") for n, v in message_extra[:MAX_EXTRA]),
        notes=tuple(notes),
    )


def _new_group(current: list[list[str]] | None, name: str) -> list[list[str]]:
    """Start a recipient group, taking over a stray Original-Recipient from `current`.

    "Original-Recipient: B" written after group A's fields and just before
    "Final-Recipient: B" (no blank line between) belongs to B: RFC 3464 section 2.3
    puts Original-Recipient before Final-Recipient in a group.
    """
    new: list[list[str]] = []
    if (current and name == "final-recipient" and current[-1][0] == "original-recipient"
            and any(f[0] == "final-recipient" for f in current[:-1])):
        new.append(current.pop())
    return new


def _recipient(group: list[list[str]]) -> DsnRecipient:
    values: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for name, value in group:
        if name in RECIPIENT_FIELDS and name not in values:
            values[name] = value
        elif len(extra) < MAX_EXTRA:
            extra.append((name, _cut(value) or ""))
    return DsnRecipient(
        final_recipient=_cut(values.get("final-recipient")),
        original_recipient=_cut(values.get("original-recipient")),
        action=_cut(values.get("action")),
        status=_cut(values.get("status")),
        diagnostic_code=_cut(values.get("diagnostic-code")),
        remote_mta=_cut(values.get("remote-mta")),
        last_attempt_date=_cut(values.get("last-attempt-date")),
        will_retry_until=_cut(values.get("will-retry-until")),
        extra=tuple(extra),
    )


def _returned_original(container: Message, status_part: Message) -> ReturnedOriginal | None:
    """Headers of the returned message: the first message/rfc822 or headers part.

    Looked for among the parts of the report's container (RFC 6522 section 3: the
    optional third part). Returns None when there is none, or when it has no header
    that identifies the message.
    """
    for part, _parent in iter_parts(container):
        if part is status_part or content_type(part) not in ORIGINAL_TYPES:
            continue
        original = returned_original(part)
        if original is not None:
            return original
    return None


# --------------------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Assessment:
    """What one recipient group means to unsubd; its `to_json` is the evidence row."""

    address: str | None             # normalised, or None if the field is not an address
    address_type: str | None        # "rfc822", "utf-8", ... as written, lower-cased
    action: str                     # failed | delayed | delivered | relayed | expanded | unknown
    status: str | None              # the effective RFC 3463 code (see effective_status)
    status_source: str              # status | diagnostic | reply_code | none
    reason: BounceReason | None
    hard: bool
    outcome: ActionType | None      # SUPPRESS, SOFT_BOUNCE or None
    why_none: str | None            # when outcome is None for a failed recipient
    recipient: DsnRecipient
    address_source: str = "final-recipient"   # see resolve_address

    def to_json(self) -> dict[str, Any]:
        r = self.recipient
        return {
            "address": self.address,
            "address_type": self.address_type,
            "address_source": self.address_source,
            "final_recipient": r.final_recipient,
            "original_recipient": r.original_recipient,
            "original_address": original_address(r),
            "action": self.action,
            "dsn_action": r.action,
            "status": self.status,
            "dsn_status": r.status,
            "status_source": self.status_source,
            "reason": self.reason.value if self.reason else None,
            "hard": self.hard,
            "outcome": self.outcome.value if self.outcome else None,
            "why_none": self.why_none,
            "diagnostic_code": r.diagnostic_code,
            "diagnostic": split_typed(r.diagnostic_code)[1] or None,
            "remote_mta": r.remote_mta,
            "last_attempt_date": r.last_attempt_date,
            "will_retry_until": r.will_retry_until,
        }


def split_typed(value: str | None) -> tuple[str | None, str | None]:
    """Split an RFC 3464 typed value ("rfc822; a@b", "smtp; 550 ...") into (type, text).

    The type is lower-cased; a value without a `type;` prefix gives (None, value).
    None gives (None, None).
    """
    if value is None:
        return None, None
    match = _TYPED.match(value)
    if match is None:
        return None, value.strip()
    return match.group(1).lower(), match.group(2).strip()


def recipient_address(recipient: DsnRecipient, sent_to: tuple[str, ...] = (), *,
                      sole: bool = False, verp: tuple[str, ...] = ()) -> tuple[str | None, str | None]:
    """The normalised address of a recipient group and its address type (see `resolve_address`)."""
    address, address_type, _source = resolve_address(recipient, sent_to, sole=sole, verp=verp)
    return address, address_type


# Top-level labels that name no public domain: RFC 6761 special-use names, RFC 6762
# `.local`, and the names sites give their own hosts (`.internal`, `.localdomain`, `.lan`,
# `.corp`, `.home`, `.intranet`, `.private`), which never receive mail from outside.
NON_PUBLIC_TLDS = frozenset({"local", "localdomain", "localhost", "internal", "intranet", "lan", "corp", "home",
                             "private", "invalid", "test", "arpa", "onion"})


def is_public(address: str | None) -> bool:
    """Whether `address` is at a host that can be a public mail domain: two labels or
    more, not a domain literal, no special-use or site-internal top-level label."""
    if not address or "@" not in address:
        return False
    labels = address.rsplit("@", 1)[1].rstrip(".").split(".")
    return len(labels) >= 2 and labels[-1] not in NON_PUBLIC_TLDS and not labels[-1].isdigit()


def _internal_form(address: str, original: str | None) -> bool:
    """An address in a receiving site's internal form, not one anybody sends to:
    Exchange's IMCEA encapsulation of a non-SMTP address (IMCEAEX-..., IMCEANOTES-...),
    or a mailbox host inside the domain of the Original-Recipient
    (`user@ex-mbx04.prod.example.no` for `user@example.no`)."""
    local, _at, domain = address.rpartition("@")
    if local.startswith("imcea"):
        return True
    if original and "@" in original:
        return domain.endswith("." + original.rsplit("@", 1)[1])
    return False


def _local_part(text: str | None) -> str | None:
    """The local part a Final-Recipient names, also when it is a bare local part, a
    domain literal or a source route (RFC 5321 section 4.1.2: `@a,@b:user@host`)."""
    if not text:
        return None
    text = text.strip().strip("<>").strip()
    if text.startswith("@") and ":" in text:
        text = text.split(":", 1)[1]
    local = text.rpartition("@")[0] if "@" in text else text
    local = local.strip().strip('"').lower()
    return local if local and len(local) <= 64 and not any(c in local for c in " \t<>@,;:") else None


def resolve_address(recipient: DsnRecipient, sent_to: tuple[str, ...] = (), *,
                    sole: bool = False, verp: tuple[str, ...] = ()) -> tuple[str | None, str | None, str]:
    """(address, address type, where it was read) for one recipient group.

    RFC 3464 section 2.3.2: Final-Recipient is the address the report is about; but
    unsubd acts on the address it sent to, and a Final-Recipient can be a form nobody
    sends to. It is used when it is one of the addresses we are known to have sent to
    (`sent_to`: the returned original's X-Original-To and To, our VERP address), or
    when it is at a public domain and not a site-internal form (see `_internal_form`).
    Otherwise, in order (issue 21): the Original-Recipient (section 2.3.1; RFC 3461
    section 4 xtext undone, RFC 6533 section 3 \\x{HHHH} escapes undone); the address
    in `sent_to` with the Final-Recipient's local part (a bare local part, a domain
    literal, an internal host); with `sole` (the report has one group), the one
    address in `sent_to` (only in `verp`, our VERP address, when the group names
    another local part); else the Final-Recipient as written, when it is an address.
    Sources: "final-recipient", "original-recipient", "returned original", "none".
    """
    final_type, final_text = split_typed(recipient.final_recipient)
    orig_type, orig_text = split_typed(recipient.original_recipient)
    original = _address(_xtext_decode(orig_text) if orig_type in (None, "rfc822") else orig_text,
                        orig_type) if orig_text else None
    if recipient.final_recipient is None:
        return original, orig_type, "original-recipient" if original else "none"
    final = _address(final_text, final_type) if final_text else None
    known = set(sent_to) | ({original} if original else set())
    if final and (final in known or (is_public(final) and not _internal_form(final, original))):
        return final, final_type, "final-recipient"
    if original:
        return original, orig_type, "original-recipient"
    local = _local_part(final_text)
    if local and not (final and local.startswith("imcea")):
        for candidate in sent_to:
            if candidate.rpartition("@")[0] == local:
                return candidate, "rfc822", "returned original"
    # The one address we sent to stands in for a group that names nobody usable: any
    # of them when the group names no local part at all (empty, `<>`, an X.400 O/R
    # address); only our VERP address when it names another local part, which the
    # returned original's To does not outweigh (sisimai lhost-postfix-79).
    distinct = set(verp) if local and final_type in (None, "rfc822") else set(sent_to)
    if sole and len(distinct) == 1:
        return next(iter(distinct)), "rfc822", "returned original"
    if final:
        return final, final_type, "final-recipient"
    return None, final_type, "none"


# RFC 3461 section 4: xtext writes "+" and characters outside "!".."~" or "=" as "+HH"
# (upper-case hex). MTAs copy the ORCPT value into Original-Recipient still encoded.
_XTEXT = re.compile(r"\+([0-9A-F]{2})")


def _xtext_decode(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        return chr(code) if 0x21 <= code <= 0x7E else match.group(0)
    return _XTEXT.sub(one, text) if "+" in text else text


def _address(text: str, address_type: str | None) -> str | None:
    if address_type == "utf-8":
        text = _UTF8_ESCAPE.sub(_unescape_utf8, text)
    # One stray angle bracket is an MTA typo, not a different address
    # ("RFC822; user@example.jp>" in sisimai err/make-test-31).
    if text.startswith("<") != text.endswith(">"):
        text = text.strip("<>")
    return normalise(text)


def original_address(recipient: DsnRecipient) -> str | None:
    """The normalised Original-Recipient (RFC 3464 section 2.3.1), for evidence only.

    It is the address as the sender gave it, before forwarding; it never replaces a
    Final-Recipient that is present (see `recipient_address`). None if absent or not
    an address.
    """
    address_type, text = split_typed(recipient.original_recipient)
    if text and address_type in (None, "rfc822"):
        text = _xtext_decode(text)
    return _address(text, address_type) if text else None


def _unescape_utf8(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if 0x80 <= code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group(0)


def unwrap_relay_reply(diagnostic: str | None) -> tuple[str | None, str | None]:
    """(the receiving server's reply, the relay's own code) from a diagnostic that a
    relay wrapped in its own wording (Amazon SES, see _SES_WRAPPED); (diagnostic, None)
    for any other text."""
    match = _SES_WRAPPED.match(diagnostic or "")
    if match is None:
        return diagnostic, None
    return f"{match.group(2)} {match.group(3).strip()}", match.group(1)


def effective_status(raw_status: str | None, diagnostic_code: str | None) -> tuple[str | None, str]:
    """The most specific RFC 3463 status code for a recipient, and where it came from.

    Returns (code, source) with source one of "status", "diagnostic", "reply_code",
    "none":

    * a specific Status field (RFC 3464 section 2.3.4) wins;
    * a generic X.0.0 Status, or a missing one, is refined by the first enhanced code
      of the same class in the Diagnostic-Code text (section 2.3.6), e.g. Exim's
      "Status: 5.0.0" with "550 5.1.1 ..." or "550-5.1.1 ...";
    * with no Status and no enhanced code, an RFC 5321 reply code at the start of the
      Status or the diagnostic gives its class only ("550 ..." gives "5.0.0");
    * otherwise (None, "none").
    """
    status = _first_code(raw_status or "")
    _dtype, diag = split_typed(diagnostic_code)
    if status is not None and not status.endswith(".0.0"):
        return status, "status"
    refined = _first_code(diag or "", klass=status[0] if status else None)
    if refined is not None and refined != status:
        return refined, "diagnostic"
    if status is not None:
        return status, "status"
    # Some MTAs put the SMTP reply in Status ("Status: 553 Exceeded ...", flufl dsn_03).
    reply = _REPLY_CODE.match(raw_status or "") or _REPLY_CODE.match(diag or "")
    if reply is not None:
        return f"{reply.group(1)}.0.0", "reply_code"
    return None, "none"


def _first_code(text: str, klass: str | None = None) -> str | None:
    for match in _STATUS_CODE.finditer(text):
        if klass is None or match.group(1) == klass:
            return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"
    return None


def assess(recipient: DsnRecipient, notice: str = "", sent_to: tuple[str, ...] = (), *,
           sole: bool = False, verp: tuple[str, ...] = ()) -> Assessment:
    """Decide what one recipient group asks for (RFC 3464 section 2.3.3, RFC 3463).

    * Action `failed` with a hard code (class 5 and a code about the address: 5.1.x
      except sender-side 5.1.7/5.1.8, 5.2.1, 5.4.4) gives SUPPRESS;
    * any other `failed` (4.x.x, 5.2.2, 5.3.x, 5.7.x, no status...) gives SOFT_BOUNCE;
    * `delayed`, `delivered`, `relayed`, `expanded` give nothing;
    * a missing Action with a 5.x.x status is read as `failed`; any other missing or
      unrecognised Action gives nothing;
    * a group without a usable address gives nothing, whatever it says.

    The address is read by `resolve_address` (with `sent_to` and `sole`).
    """
    address, address_type, address_source = resolve_address(recipient, sent_to, sole=sole, verp=verp)
    diag_type, diag = split_typed(recipient.diagnostic_code)
    diag, relay_code = unwrap_relay_reply(diag)
    status, source = effective_status(recipient.status, f"{diag_type or 'smtp'}; {diag}" if diag else None)
    if relay_code is not None and (status is None or status.endswith(".0.0")):
        status, source = relay_code, "diagnostic"
    action = _action_word(recipient.action)
    if action is None:
        # RFC 3464 requires Action; without a usable one, a permanent status can only
        # mean failure (flufl dsn_18 says "Action: error", Status 5.0.0).
        action = "failed" if status and status.startswith("5.") else "unknown"
    reason: BounceReason | None = None
    hard = False
    outcome: ActionType | None = None
    why_none: str | None = None
    if action == "failed":
        if not diag and address and (not status or status.endswith(".0.0")):
            # No Diagnostic-Code and a generic Status: the human-readable part often says
            # what the server replied, on the recipient's own line (OpenSMTPD, lhost-
            # opensmtpd-17; Gmail's "wasn't delivered to a@b because ...", rfc3464-65).
            diag = _notice_line(notice, address)
            if not diag and address_source != "final-recipient":
                # The notice may name the recipient as the report's group did: a bare
                # local part, an internal host (Exim's "  sigrid.vik").
                local = _local_part(split_typed(recipient.final_recipient)[1])
                diag = _notice_line(notice, local) if local and len(local) > 2 else ""
            if diag:
                refined, refined_source = effective_status(recipient.status, diag)
                if refined is not None and refined != status:
                    status, source = refined, refined_source
        status, reason, hard, derived = explain(status, diag, context=notice_context(notice, address))
        if derived == "text":
            source = "text"
        if address is None:
            why_none, hard = "no usable address", False
        else:
            outcome = ActionType.SUPPRESS if hard else ActionType.SOFT_BOUNCE
    return Assessment(address=address, address_type=address_type, action=action, status=status,
                      status_source=source, reason=reason, hard=hard, outcome=outcome,
                      why_none=why_none, recipient=recipient, address_source=address_source)


def structured_row(address: str, action: str, status: str | None, diagnostic: str | None, *,
                   temporary: bool = False) -> dict[str, Any]:
    """The evidence row for one recipient of a structured report (SES JSON, an upstream
    event), read as the RFC 3464 group it stands for (see `assess`).

    `temporary` says the report itself calls the failure temporary (SES "Transient"):
    such a failure is counted, never suppressed, whatever its code.
    """
    row = assess(DsnRecipient(final_recipient=f"rfc822; {address}", action=action, status=status,
                              diagnostic_code=diagnostic)).to_json()
    if temporary and row["outcome"] == ActionType.SUPPRESS.value:
        row.update(outcome=ActionType.SOFT_BOUNCE.value, hard=False)
    return row


def _action_word(value: str | None) -> str | None:
    words = (value or "").split(maxsplit=1)
    if not words:
        return None
    word = words[0].strip(";,.()").lower()
    word = ACTION_ALIASES.get(word, word)
    return word if word in ACTIONS else None


def decide_bounce(item: Inbound, report: DsnReport, ctx: Context, now: datetime) -> Decision:
    """Turn a delivery-status report into a BOUNCE decision (RFC 3464, RFC 3463).

    One action per distinct failed address (see `assess`): SUPPRESS with hard=True or
    SOFT_BOUNCE with hard=False, for all units on the email channel (a suppression is
    about the address; the unit the bounced mail came from is kept in evidence). When
    one address appears in several groups, the hard outcome wins. A report with no
    recipient groups, or with only delayed, delivered or unaddressable ones, gives a
    decision with no actions. The envelope rules of handlers.bounces.envelope apply:
    only a bounce attributed with certainty by a signed return path is `verified`, and
    a bounce to an unsigned or forged return path, or naming another address than the
    one we sent to, is counted but never suppresses on its own. `now` is not used yet.
    """
    verp = tuple(verp_hints([*(item.rcpt_tos or ()), *report.addressed_to], ctx))
    # What we sent to matters only when some group's Final-Recipient is not plainly usable.
    plain = all(source == "final-recipient" and is_public(address) for address, _t, source in
                (resolve_address(r) for r in report.recipients))
    sent_to = verp if plain else sent_to_addresses(report.original, verp, ctx)
    sole = len(report.recipients) == 1
    assessments = [assess(r, report.notice, sent_to, sole=sole, verp=verp) for r in report.recipients]
    if report.text_notice is not None and any(a.address for a in assessments) and all(
            a.address_source == "returned original" for a in assessments if a.address):
        # The groups name nobody usable, so their address was taken from the returned
        # original; the notice text names someone too. Where the two disagree, neither
        # is certain: the notice's reading is recorded as before (sisimai lhost-exim-60).
        named = {r.address for r in report.text_notice.recipients}
        if not {a.address for a in assessments if a.address} <= named:
            assessments = [replace(a, address=None) for a in assessments]
    if report.text_notice is not None and not any(a.address for a in assessments):
        # No group names a usable address, but the notice text does (see read_dsn).
        # Recorded, never acted on: the report's own groups name someone else (a local
        # mailbox, an X.400 or pipe address), so the notice's address is a guess
        # (flufl dsn_01, lhost-messagingserver-02).
        return decide_text_bounce(item, report.text_notice, ctx, now, act=False)
    del now  # part of every decide_* signature
    original = report.original.to_json() if report.original else None
    rows, envelope, certain = apply_envelope(item, [a.to_json() for a in assessments], original, ctx)
    related, related_why = relation(item, original, report.addressed_to, envelope["return_path"]["form"],
                                    envelope.get("unit"), ctx, raw_return_path=report.return_path,
                                    raw_from=report.from_)
    if not related:
        drop_unrelated(rows, related_why)
    actions = actions_from_rows(rows, ref=original_ref(original, report.original_envelope_id))
    evidence: dict[str, Any] = {
        "report_type": report.report_type,
        "reporting_mta": report.reporting_mta,
        "arrival_date": report.arrival_date,
        "original_envelope_id": report.original_envelope_id,
        "recipients": rows,
        "original": original,
        "notes": list(report.notes),
        **envelope,
        "null_sender": null_sender(item),
        "related": related,
        "relation": related_why,
    }
    reason, review = _summary(assessments), False
    if not related:
        reason = f"{reason}; not acted on: {UNRELATED}: {related_why}"
    # A signed return path that names the address outweighs the look of the original.
    if not certain and (forged := forged_original(evidence["original"], ctx)):
        # Evidence only, and a person looks: see bounce_envelope.forged_original.
        actions, review, reason = (), True, f"{reason}; not acted on: {forged}"
        evidence["forged"] = forged
        drop_forged(rows, evidence, forged)
    return Decision(item_id=item.id, kind=Kind.BOUNCE, actions=actions, reason=reason, review=review,
                    verified=certain, source=item.source, evidence=evidence)


def _summary(assessments: list[Assessment]) -> str:
    """E.g. "dsn: 2 failed (5.1.1 user_unknown, 5.2.2 mailbox_full), 1 delayed"."""
    if not assessments:
        return "dsn: no recipient groups"
    counts = Counter(a.action for a in assessments)
    failed = Counter(f"{a.status or 'no status'} {a.reason.value if a.reason else ''}".strip()
                     for a in assessments if a.action == "failed")
    unaddressed = sum(1 for a in assessments if a.action == "failed" and a.address is None)
    parts = []
    for action in ("failed", "delayed", "delivered", "relayed", "expanded", "unknown"):
        if not counts[action]:
            continue
        if action == "failed":
            details = [k for k, _n in failed.most_common(3)] + (["..."] if len(failed) > 3 else [])
            if unaddressed:
                details.append(f"{unaddressed} without a usable address")
            parts.append(f"{counts[action]} failed ({', '.join(details)})")
        else:
            parts.append(f"{counts[action]} {action if action != 'unknown' else 'with no usable Action'}")
    return "dsn: " + ", ".join(parts)
