"""Bounces that are not RFC 3464 reports: MTA text notices, read by pattern tables.

`read_bounce` turns a parsed message into a `TextBounce` or None; `decide_text_bounce`
turns that into a BOUNCE decision. Which MTA wrote a notice, and where it names the
failed recipients, is data (`bounce_patterns.MTA_FORMS`); why it failed is data too
(`bounce_patterns.REASON_PATTERNS`, shared with handlers.bounces.dsn). This module only walks
those tables.

Precision matters more than recall here: a misread bounce must never suppress an
address. So a message is read only when it both looks like a bounce (From, Subject,
X-Failed-Recipients or Return-Path) and its notice text says delivery failed, auto-
replies are left alone (RFC 3834 Auto-Submitted, vacation subjects), and addresses
of the bounce's own headers and of the returned original's sender are never taken
as recipients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache, cached_property
from datetime import datetime
from email.message import Message
from html import unescape
from typing import Any

from handlers.bounces import patterns as patterns
from handlers.mail.addresses import normalise
from handlers.mail.needles import NeedleFinder
from handlers.bounces.envelope import (UNRELATED, actions_from_rows, apply_envelope, drop_forged, drop_unrelated,
                                      forged_original, null_sender, original_ref, relation)
from handlers.bounces.original import (ORIGINAL_TYPES, STATUS_TYPES, ReturnedOriginal, addressed_to, inline_original,
                                      returned_original)
from handlers.bounces.reasons import explain, notice_context, text_reason
from handlers.mail.message import (
    content_type,
    header_text,
    iter_parts,
    payload_parts,
    part_text,
)
from handlers.model import ActionType, Decision, Inbound, Kind
from handlers.replies.quotes import strip_tags
from handlers.context import Context

MAX_NOTICE = 64_000      # characters of notice text searched; notices are short, originals are not
MAX_RECIPIENTS = 100     # a text notice naming more is a list explosion, not one of ours
MAX_DIAGNOSTIC = 1000    # characters kept per recipient as evidence

# Tags are removed by handlers.replies.quotes.strip_tags (any_closer): the same as the regex
# r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]{0,2000}>" in one linear pass, where
# the regex re-scanned the text after every unclosed "<script" (issue 22). A block tag
# is read up to the next "<" or ">", not re-scanned to the end after every "<br".
_BLOCK_TAGS = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", re.IGNORECASE)
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n(?=[ \t]*\S)")
# An RFC 5321 failure reply code (4xx or 5xx; a 2xx reply is not a failure, and a
# "Size (in bytes): 222" is not a reply at all, lhost-verizon-02).
# Both start with their digit class and check the character before in Python: a pattern
# that opens with a look-behind is tried at every position of the text, one with a
# character class is scanned for that class first.
_REPLY = re.compile(r"([45])\d\d(?:[ -]|$)", re.MULTILINE)
_ENHANCED = re.compile(r"([245])\.([0-7])\.(\d{1,3})(?!\d|\.\d)")
# Contexts in which an address is the sender or a mailbox of the reporting system,
# not a failed recipient: "MAIL FROM:<a>", "envelope-from <a>", "from a", header lines
# of the original that slipped above the cut.
_SENDER_CONTEXT = re.compile(
    r"(?:mail from|envelope-from|envelope sender|return-path|reply-to|sender|from|by|message-id|"
    r"smtp\.mailfrom|mailto|href|received)\s*[:=]?\s*[<\"(]?\s*$", re.IGNORECASE)
# A line that offers a mailbox for help ("please contact <support@...>", lhost-postfix-49)
# names the reporting site's staff, not a failed recipient.
_HELP_CONTEXT = re.compile(r"contact|assistance|questions|help ?desk|support|send (?:e-?)?mail to|write to|"
                           r"administrator|abuse|complain|report (?:this|abuse)", re.IGNORECASE)
# A line that echoes a header of the original ("To: a@b" under "This report relates to a
# message you sent with the following header fields", flufl dsn_01) names the original's
# recipients, not the failed one.
_HEADER_ECHO = re.compile(r"^\s*(?:to|cc|bcc|from|sender|reply-to|subject|date|message-id)\s*:", re.IGNORECASE)
_ALONE = re.compile(r"(?:rcpt to:\s*)?<?[^\s<>]+@[^\s<>]+>?:?", re.IGNORECASE)
_MARKERS_ANY_CASE = re.compile(patterns.ORIGINAL_MARKERS.pattern.pattern, re.IGNORECASE | re.MULTILINE)
_SYSTEM_LOCAL = frozenset({"postmaster", "mailer-daemon", "mail-daemon", "maildaemon", "mailerdaemon",
                           "abuse", "noreply", "no-reply", "root", "daemon", "bounce", "bounces", "mailer"})


@dataclass(frozen=True)
class TextRecipient:
    """One failed recipient read from a notice, with the text around it as evidence."""

    address: str
    diagnostic: str
    via: str                # the MTA form name, "x-failed-recipients" or "generic"
    following: str = ""     # the text from the recipient's line up to the next recipient


@dataclass(frozen=True)
class TextBounce:
    """A non-standard bounce notice: who failed, what the notice says, and which form."""

    form: str
    recipients: tuple[TextRecipient, ...]
    temporary: bool
    notice: str
    subject: str | None = None
    from_: str | None = None
    original: ReturnedOriginal | None = None
    notes: tuple[str, ...] = ()
    addressed_to: tuple[str, ...] = ()   # the notice's own To, Delivered-To, ... (raw; our VERP address)
    return_path: str | None = None        # the notice's own Return-Path header, as written
    inline_copy: bool = False             # `original` was read from a copy pasted into the notice text

    @cached_property
    def notice_code(self) -> str | None:
        """The notice's first RFC 3463 code (asked once per recipient, found once)."""
        return _first_code(self.notice)

    @cached_property
    def notice_reply(self) -> re.Match[str] | None:
        """The notice's first 4xx/5xx reply code."""
        return _first_reply(self.notice)


# --------------------------------------------------------------------------- reading


def read_bounce(msg: Message, *, inside_report: bool = False) -> TextBounce | None:
    """Read a non-RFC-3464 bounce notice (qmail, Exim, Postfix text, Exchange, ...) or return None.

    Returns None for: a message with a delivery-status part (RFC 3464, read by
    handlers.bounces.dsn) or a feedback report (RFC 5965); an auto-reply (RFC 3834
    Auto-Submitted: auto-replied, vacation headers or subjects); a message that
    does not look like a bounce by its headers (From, Subject, X-Failed-Recipients,
    Return-Path <>) and by its notice text's form; a notice that names no
    recipient. Never raises.

    `inside_report=True` reads the notice text of a multipart/report whose
    delivery-status part names no usable recipient (handlers.bounces.dsn asks for this:
    Exim's "pipe to |..." groups in lhost-exim-44, Sun Messaging Server's
    source-routed Final-Recipient in lhost-messagingserver-02).

    The text must say delivery failed: a failure phrase, X-Failed-Recipients, a delay
    warning (bounce_patterns.DELAY_WARNING) from a mail system's From, an MTA
    form naming recipients under bounce-like headers, or, under a daemon sender, a
    bounce subject or a null Return-Path, a reason in words (handlers.bounces.reasons.text_reason)
    in the notice or the subject. A notice that names nobody but returns a message
    that is itself a bounce (from a daemon) is read from that inner bounce, once.
    """
    try:
        return _read(msg, inside_report)
    except RecursionError:
        return None


def _read(msg: Message, inside_report: bool, nested: bool = False) -> TextBounce | None:
    for part, _parent in iter_parts(msg):
        kind = content_type(part)
        if kind == "message/feedback-report" or (kind in STATUS_TYPES and not inside_report):
            return None
    subject = header_text(msg, "Subject") or ""
    from_ = header_text(msg, "From") or ""
    x_failed = header_text(msg, "X-Failed-Recipients") or ""
    return_path = (header_text(msg, "Return-Path") or "").strip()
    notice, original_msg, copy = _notice(msg)
    if not notice.strip() and not x_failed:
        return None
    lowered = notice.lower()
    # Each form's signature is searched once: the first one found names the form, and the
    # recipients are read by the first detected form that finds any.
    detected = _detected_forms(lowered)
    form = detected[0] if detected else None
    # Exim marks its own bounces "Auto-Submitted: auto-replied" (lhost-exim-01), so
    # auto-reply signs only count against a message no MTA form or daemon sender claims.
    if (form is None and not x_failed and not patterns.BOUNCE_FROM.search(from_)
            and _is_auto_reply(msg, subject)):
        return None
    # A Return-Path naming a mailer daemon (a bounce sent from MAILER-DAEMON@host instead
    # of the null path of RFC 5321 section 4.5.5) says it as well as the From would.
    looks = bool(patterns.BOUNCE_FROM.search(from_) or patterns.BOUNCE_SUBJECT.search(subject)
                 or x_failed or return_path in ("<>", "") or patterns.BOUNCE_FROM.search(return_path[:300]))
    if not looks and form is None:
        return None
    recipients, via = _form_recipients(notice, detected)
    # Besides the bounce-like headers, the text must say something failed: a failure
    # phrase, or an MTA form that names recipients under a daemon sender or bounce
    # subject (lhost-v5sendmail-02 says only "Host unknown" in a transcript).
    # A daemon sender, a bounce subject or a null return path, and a reason in words in
    # the notice or the subject ("The user(s) account is disabled." in lhost-ezweb-03,
    # Sendmail's "Returned mail: User unknown") say it as well.
    daemon = bool(patterns.BOUNCE_FROM.search(from_) or patterns.BOUNCE_SUBJECT.search(subject)
                  or return_path == "<>")
    # A delay warning says it too ("has not yet been delivered", "keeps trying": RFC 3464's
    # `Action: delayed` in words), when a mail system sends it: a person's challenge-response
    # filter says "not delivered yet" of a message it holds, and is not a delivery notice.
    said = bool(x_failed or patterns.FAILURE_PHRASE.search_lowered(lowered) or (
        patterns.BOUNCE_FROM.search(from_) and patterns.DELAY_WARNING.search_lowered(lowered)))
    failed = said or (daemon and text_reason(f"{subject}\n{notice}") is not None)
    if not (failed or (recipients and looks)):
        return None
    # X-Failed-Recipients (Exim, Google) only when the notice's own form names
    # nobody: where both exist and differ, the notice is the later, specific word
    # (lhost-exim-03 disagrees with its own header after anonymisation).
    for raw in [] if recipients else patterns.ADDRESS_RE.findall(x_failed):
        address = normalise(raw)
        if address and address not in {r.address for r in recipients}:
            recipients.append(TextRecipient(address, _diagnostic_for(notice, raw), "x-failed-recipients"))
    if not recipients:
        # Only the generic reader needs the addresses to leave out (normalising them
        # costs more than the rest of reading a notice).
        # Read on reason words alone (no failure phrase), only listed addresses count:
        # prose around them is explanation ("if mike.fox@... fails, try ...", flufl yale_01).
        recipients = _generic_recipients(notice, _own_addresses(msg, original_msg), listed_only=not said)
        via = "generic"
    if not recipients:
        # A notice that names only the local part ("<britt>... User unknown", Exim's
        # "  erik.sandberg", Courier's "<matti.virtanen>:"): the address is the one we
        # sent to whose local part it is, from the returned original's To or our VERP
        # address (issue 21).
        recipients = _local_part_recipients(notice, _sent_to_candidates(msg, original_msg))
        if not recipients:
            # The one local part it names is another than ours: the receiving site
            # rewrote the address (an alias, hMailServer's "RCPT TO:<kristin>" for
            # kristin.holm@). Our VERP address names the one recipient the message had.
            recipients = _bare_local_recipient(notice, _verp_candidates(msg))
        via = "local-part" if recipients else via
    if not recipients and original_msg is not None and not nested:
        # The message returned is itself a bounce that names the recipient: a relay
        # bounced the bounce it got back (lhost-x5-01). Read it instead, once.
        inner = payload_parts(original_msg)
        if inner and patterns.BOUNCE_FROM.search(header_text(inner[0], "From") or ""):
            found = _read(inner[0], True, nested=True)
            if found is not None:
                return replace(found, notes=(*found.notes, "read from the bounce returned inside this one"))
    if not recipients:
        return None
    notes = []
    if len(recipients) > MAX_RECIPIENTS:
        notes.append(f"only the first {MAX_RECIPIENTS} of {len(recipients)} recipients read")
        recipients = recipients[:MAX_RECIPIENTS]
    matched = next((f for f in detected if f.name == via), form)
    temporary = bool(matched is not None and matched.temporary is not None
                     and matched.temporary.search_lowered(lowered))
    temporary = temporary or bool(patterns.DELAY_WARNING.search_lowered(lowered))
    return TextBounce(form=via, recipients=tuple(recipients), temporary=temporary, notice=notice[:MAX_DIAGNOSTIC * 4],
                      subject=subject or None, from_=from_ or None,
                      original=_original(original_msg) if original_msg is not None else inline_original(copy),
                      notes=tuple(notes), addressed_to=addressed_to(msg), return_path=return_path or None,
                      inline_copy=original_msg is None and bool(copy))


def _detected_forms(lowered: str) -> list[patterns.MtaForm]:
    """The MTA forms whose signature the lower-cased notice carries, in table order: each
    form's `detect` as Words.search_lowered reads it, with the needles of all forms found
    in one pass (handlers.mail.needles.NeedleFinder)."""
    rows, finder = _form_rows()
    present = finder.present(lowered)
    return [form for form, needles, scan in rows
            if (needles is None or not present.isdisjoint(needles)) and scan.search(lowered) is not None]


@cache
def _form_rows() -> tuple[tuple[tuple[patterns.MtaForm, tuple[str, ...] | None, re.Pattern[str]], ...], NeedleFinder]:
    rows = tuple((form, *form.detect.gate_and_scan()) for form in patterns.MTA_FORMS)
    return rows, NeedleFinder([n for _form, needles, _scan in rows for n in needles or ()])


# The classic VERP form of any return path, `base+local=domain@host` (the last "="
# separates); which host is ours is checked where the context is known.
_VERP = re.compile(r"\+([^\s<>@+=]{1,64})=([A-Za-z0-9.-]{1,253})@")


def _sent_to_candidates(msg: Message, original: Message | None) -> list[str]:
    """Addresses we may have sent to: the returned original's X-Original-To and To, and
    the address a VERP form in the notice's own To/Delivered-To names."""
    found: list[str] = []
    values: list[str] = []
    if original is not None:
        inner = payload_parts(original)
        head = inner[0] if inner else (original if content_type(original).endswith("-headers") else None)
        if head is not None and content_type(original).endswith("-headers"):
            ro = returned_original(original)
            values += [ro.x_original_to or "", ro.to or ""] if ro else []
        elif head is not None:
            values += [header_text(head, "X-Original-To") or "", header_text(head, "To") or ""]
    for value in values:
        for raw in patterns.ADDRESS_RE.findall(value)[:5]:
            address = normalise(raw)
            if address and address not in found:
                found.append(address)
    for address in _verp_candidates(msg):
        if address not in found:
            found.append(address)
    return found


def _verp_candidates(msg: Message) -> list[str]:
    """The addresses VERP forms in the notice's own To/Delivered-To/... name, without repeats."""
    found: list[str] = []
    for value in addressed_to(msg):
        for local, domain in _VERP.findall(value):
            address = normalise(f"{local}@{domain}")
            if address and address not in found:
                found.append(address)
    return found


# A bare local part in angle brackets, as an MTA writes a recipient it was given without
# a domain: "RCPT TO:<kristin>", Sendmail's "<britt>... User unknown", Courier's "<matti>:".
_BARE_LOCAL = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{2,64})>")
# Words in angle brackets that are markup or protocol, not a mailbox.
_NOT_LOCAL = frozenset({"br", "hr", "p", "div", "span", "html", "body", "head", "tr", "td", "li", "ul", "table",
                        "eot", "eom", "crlf", "cr", "lf", "none", "null", "unknown", "empty", "blank"})


def _bare_local_recipient(notice: str, verp: list[str]) -> list[TextRecipient]:
    """Our VERP recipient, when the notice names exactly one recipient and only by a bare
    local part in angle brackets (`_BARE_LOCAL`) that is not a system mailbox's.

    RFC 5321 section 3.9: a bounce goes to the return path of the one message it answers,
    and a VERP return path is made for exactly one recipient, so a notice about one bare
    local part sent to it is about that recipient, as a DSN group with another local
    part is (handlers.bounces.dsn.resolve_address, `sole`). Nothing when there is no
    single VERP address or the notice names two local parts or none.
    """
    if len(verp) != 1:
        return []
    spans: dict[str, int] = {}
    for match in _BARE_LOCAL.finditer(notice):
        local = match.group(1).lower()
        if local in _SYSTEM_LOCAL or local in _NOT_LOCAL or local.startswith(".") or local.endswith(".") or not any(c.isalpha() for c in local):
            continue
        spans.setdefault(local, match.start(1))
        if len(spans) > 1:
            return []
    if len(spans) != 1:
        return []
    return _with_diagnostics(notice, [(next(iter(spans.values())), verp[0])], "local-part")


def _local_part_recipients(notice: str, candidates: list[str]) -> list[TextRecipient]:
    """Candidates whose local part the notice names on its own (not inside an address)."""
    spans: list[tuple[int, str]] = []
    lowered = notice.lower()
    for address in candidates[:10]:
        local = address.rsplit("@", 1)[0]
        if len(local) < 2:
            continue
        start = 0
        while (at := lowered.find(local, start)) >= 0:
            start = at + len(local)
            before = lowered[at - 1:at] if at else ""
            after = lowered[start:start + 2]
            if (before and (before.isalnum() or before in "._+-@=")) or (after[:1] == "@") or (
                    after[:1] and (after[:1].isalnum() or after[:1] in "_+-=")) or (
                    after[:1] == "." and after[1:2].isalnum()):
                continue
            spans.append((at, address))
            break
    spans.sort()
    return _with_diagnostics(notice, spans, "local-part")


def _is_auto_reply(msg: Message, subject: str) -> bool:
    # RFC 3834 section 5: Auto-Submitted: auto-replied marks a reply, which a bounce
    # (auto-generated) is not. Vendor headers say the same (sisimai rfc3834-*).
    auto = (header_text(msg, "Auto-Submitted") or "").lower()
    if auto.startswith("auto-replied"):
        return True
    if any(header_text(msg, h) is not None for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply")):
        return True
    return bool(patterns.AUTOREPLY_SUBJECT.search(subject)) and not patterns.BOUNCE_SUBJECT.search(subject)


def _notice(msg: Message) -> tuple[str, Message | None, str]:
    """The human-readable text of the notice, cut before any inline copy; the attached
    original; and the inline copy (the text from the marker on, "" when there is none)."""
    texts: list[str] = []
    html: list[str] = []
    original: Message | None = None
    for part, _parent in iter_parts(msg):
        kind = content_type(part)
        if kind in ORIGINAL_TYPES:
            if original is None:
                original = part
            continue
        if kind == "text/plain" or (kind == "text/html" and not texts):
            text = _text_of(part)
            (texts if kind == "text/plain" else html).append(text)
        elif not kind.startswith(("multipart/", "message/")) and part is msg:
            texts.append(_text_of(part))
        elif kind.startswith("multipart/") and not payload_parts(part):
            # A multipart without a usable boundary is text (lhost-x5-01's inner bounce).
            texts.append(_text_of(part))
    if not texts and html:
        texts = [_html_text(h) for h in html]
    notice, copy = _cut("\n".join(texts)[:MAX_NOTICE * 4])
    return notice[:MAX_NOTICE], original, copy


def _text_of(part: Message) -> str:
    return part_text(part).replace("\r\n", "\n").replace("\r", "\n")


def _html_text(html: str) -> str:
    text = _BLOCK_TAGS.sub("\n", html[:MAX_NOTICE * 4])
    return unescape(strip_tags(text, " ", any_closer=True))


def _cut(notice: str) -> tuple[str, str]:
    lowered = notice.lower()
    if len(lowered) == len(notice):
        match = patterns.ORIGINAL_MARKERS.search_lowered(lowered)
    else:  # a character whose lower case is longer: positions would shift
        match = _MARKERS_ANY_CASE.search(notice)
    # A marker on the first lines is the notice's own header block (MTAs that paste
    # "Received:" first, lhost-ezweb-*); only cut if some text precedes it.
    if match is not None and notice[:match.start()].strip():
        return notice[:match.start()], notice[match.start():]
    return notice, ""


def _own_addresses(msg: Message, original: Message | None) -> set[str]:
    """Addresses that are never a failed recipient: the bounce's own and the original's sender."""
    found: set[str] = set()
    sources = [header_text(msg, h) or "" for h in ("From", "To", "Cc", "Reply-To", "Sender", "Return-Path")]
    if original is not None:
        inner = payload_parts(original)
        head = inner[0] if inner else None
        if head is not None:
            sources += [header_text(head, h) or "" for h in ("From", "Sender", "Return-Path", "Reply-To")]
    for text in sources:
        for raw in patterns.ADDRESS_RE.findall(text):
            address = normalise(raw)
            if address:
                found.add(address)
    return found


# An X.400 O/R address carries the Internet address as a domain-defined attribute
# (RFC 2156 section 4.2.2): "c=US;a= ;p=Org;o=Site;dda:SMTP=user@example.com;" in
# Exchange 5.5's notices. The address regex starts at "SMTP=", an atom like any other.
_DDA_TYPES = ("smtp=", "rfc-822=", "rfc822=")


def _dda_address(notice: str, start: int, raw: str) -> str:
    """`raw` without a DDA type prefix when the notice writes it as an X.400 attribute."""
    lowered = raw[:9].lower()
    if lowered.startswith(_DDA_TYPES) and notice[max(0, start - 4):start].lower() == "dda:":
        return raw.partition("=")[2]
    return raw


def _is_system(address: str) -> bool:
    return address.split("@", 1)[0] in _SYSTEM_LOCAL


def _form_recipients(notice: str, detected: list[patterns.MtaForm]) -> tuple[list[TextRecipient], str]:
    for form in detected:
        spans: list[tuple[int, str]] = []
        seen: set[str] = set()
        for match in form.recipients.finditer(notice):
            group = next((k for k, v in match.groupdict().items() if v and k.startswith("addr")), None)
            address = normalise(_dda_address(notice, match.start(group), match.group(group))) if group else None
            if group is None or address is None or address in seen:
                continue
            seen.add(address)
            spans.append((match.start(group), address))
            if len(spans) > MAX_RECIPIENTS:
                break
        if spans:
            return _with_diagnostics(notice, spans, form.name), form.name
    return [], ""


def _generic_recipients(notice: str, excluded: set[str], *, listed_only: bool = False) -> list[TextRecipient]:
    """Addresses the notice names that are not its own, its sender's, or a system mailbox.

    With `listed_only`, only an address that is its line's whole content (in angle
    brackets or after "RCPT TO:" at most) counts: one inside prose is an example or
    a contact, not a listed recipient.
    """
    spans: list[tuple[int, str]] = []
    seen: set[str] = set()
    for match in patterns.ADDRESS_RE.finditer(notice):
        before = notice[max(0, match.start() - 40):match.start()]
        line = notice[notice.rfind("\n", 0, match.start()) + 1:notice.find("\n", match.end()) % (len(notice) + 1)]
        if _SENDER_CONTEXT.search(before) or before.endswith(("/", "=", ".")) or _HELP_CONTEXT.search(line) or _HEADER_ECHO.match(line):
            continue
        if listed_only and not _ALONE.fullmatch(line.strip()):
            continue
        address = normalise(_dda_address(notice, match.start(), match.group(0)))
        if address is None or address in seen or address in excluded or _is_system(address):
            continue
        seen.add(address)
        spans.append((match.start(), address))
        if len(spans) > MAX_RECIPIENTS:
            break
    return _with_diagnostics(notice, spans, "generic")


def _with_diagnostics(notice: str, spans: list[tuple[int, str]], via: str) -> list[TextRecipient]:
    out = []
    for i, (start, address) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(notice)
        line_start = notice.rfind("\n", 0, start) + 1
        # A recipient's own text ends at the next recipient or at the end of its
        # paragraph: Exim and Mail.ru repeat the whole list in a second language
        # below (lhost-mailru-03), which must not lend one recipient another's words.
        line_end = notice.find("\n", start)
        para = _PARAGRAPH_END.search(notice, line_end if line_end >= 0 else len(notice))
        if para is not None and para.start() < end:
            end = para.start()
        block = notice[line_start:end].strip()
        # Up to the next recipient, paragraphs included: DragonFly and Lotus Notes write
        # the address in one paragraph and the server's reply in the next (lhost-dragonfly-09).
        following = notice[line_start:spans[i + 1][0] if i + 1 < len(spans) else len(notice)]
        out.append(TextRecipient(address, _squeeze(block), via, _squeeze(following)))
    return out


def _diagnostic_for(notice: str, raw: str) -> str:
    at = notice.lower().find(raw.lower())
    if at < 0:
        return ""
    return _squeeze(notice[notice.rfind("\n", 0, at) + 1:])


def _squeeze(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:20])[:MAX_DIAGNOSTIC]


def _original(part: Message | None) -> ReturnedOriginal | None:
    return returned_original(part) if part is not None else None


# --------------------------------------------------------------------------- deciding


def assess_text(recipient: TextRecipient, bounce: TextBounce) -> dict[str, Any]:
    """The evidence row for one recipient of a text notice (same shape as handlers.bounces.dsn rows).

    Reason words come from the recipient's own lines, else the text up to the next
    recipient, else the whole notice, else the subject; the notice around the address
    tells the SMTP stage (handlers.bounces.reasons.explain). Status: the first RFC 3463 code in
    that text (or the whole notice when it has none); else derived from the reason
    words with the class of an RFC 5321 4xx/5xx reply code, of the form's delay
    wording, or of the notice's words.
    A delay warning gives action "delayed" and no outcome; a permanent recipient-side
    reason gives SUPPRESS; anything else SOFT_BOUNCE.
    """
    block = recipient.diagnostic
    if not _has_reason(block) and recipient.following and _has_reason(recipient.following):
        # The reason is in a later paragraph before the next recipient (DragonFly, Notes).
        block = recipient.following
    code = _first_code(block) or bounce.notice_code
    reply = _first_reply(block) or bounce.notice_reply
    default_class = "4" if bounce.temporary else (reply.group(1) if reply else None)
    if not _has_reason(block):
        # The recipient's own lines give no reason (Gmail, Domino and Sendmail put it in
        # a later paragraph): the whole notice speaks for it, and is kept as evidence.
        block = _squeeze(f"{block}\n{bounce.notice}")
    if not _has_reason(block) and bounce.subject and _has_reason(bounce.subject):
        # Last, the subject: Sendmail's "Returned mail: User unknown" (lhost-x5-01).
        block = _squeeze(f"{bounce.subject}\n{block}")
    text = block
    # The notice around the address may say at which SMTP stage it was refused
    # (a Sendmail transcript's ">>> DATA" answered by "<<< 550 ...", err/make-test-36).
    context = notice_context(bounce.notice, recipient.address)
    status, reason, hard, source = explain(code, text, default_class=default_class, context=context)
    if status is None:
        status, source = ("4.0.0" if bounce.temporary else "5.0.0"), "text"
    why_soft = None
    if hard and recipient.via == "generic" and source == "text" and not patterns.AT_RCPT.search(
            f"{text}\n{context}") and not patterns.EXISTENCE_WORDS.search(text[:4000]) and not (
            reply is not None and reply.group(1) == "5" and patterns.ACCOUNT_STATE_WORDS.search(text[:4000])):
        # The least certain reading: no MTA form we know, no status code, and no sign that
        # the address was refused at RCPT. Words like "unknown user" may then be a filter's
        # after the message was sent (sisimai's "filtered"), so it is counted, not suppressed.
        # A notice that says the address does not exist (EXISTENCE_WORDS: "finns inte",
        # "finnes ikke", "does not exist") states a fact about the address, and is believed;
        # so is a server's own 5xx reply that the account was disabled, deactivated or
        # closed (ACCOUNT_STATE_WORDS: "550 postkasse nedlagt", "ikke længere aktiv").
        hard, why_soft = False, "an unrecognised notice with no status code and no RCPT stage"
    temporary = bounce.temporary or status.startswith("4.")
    action = "delayed" if bounce.temporary else "failed"
    outcome: ActionType | None = None
    if action == "failed":
        outcome = ActionType.SUPPRESS if hard and not temporary else ActionType.SOFT_BOUNCE
    row = {
        "address": recipient.address,
        "action": action,
        "status": status,
        "status_source": "text" if source == "text" else "diagnostic",
        "reason": reason.value,
        "hard": bool(hard and not temporary),
        "outcome": outcome.value if outcome else None,
        "diagnostic": block or None,
        "via": recipient.via,
    }
    if why_soft:
        row["why_soft"] = why_soft
    return row


def _first_code(text: str) -> str | None:
    """The first RFC 3463 code in `text` not preceded by a digit or by "digit." (a version
    number or an IP address is not a status), as "c.s.d" without leading zeros."""
    text = text or ""
    for match in _ENHANCED.finditer(text):
        at = match.start()
        if at and (text[at - 1].isdecimal() or (text[at - 1] == "." and at > 1 and text[at - 2].isdecimal())):
            continue
        return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"
    return None


def _first_reply(text: str) -> re.Match[str] | None:
    """The first RFC 5321 4xx/5xx reply code in `text` not preceded by a digit or a dot."""
    for match in _REPLY.finditer(text or ""):
        at = match.start()
        if at and (text[at - 1].isdecimal() or text[at - 1] == "."):
            continue
        return match
    return None


def _has_reason(text: str) -> bool:
    return text_reason(text) is not None


def decide_text_bounce(item: Inbound, bounce: TextBounce, ctx: Context, now: datetime, *,
                       act: bool = True) -> Decision:
    """Turn a text bounce notice into a BOUNCE decision (see `assess_text`).

    Hard failures suppress, others are counted as soft bounces, delay warnings do
    nothing. The envelope rules of handlers.bounces.envelope apply (only a signed
    return path naming the address makes it certain and `verified`; unsigned or
    forged return paths and other addresses never suppress on their own).
    `act=False` records the rows without any action (handlers.bounces.dsn uses it when a
    report's groups name no usable address), unless a signed return path names the
    address. `now` is not used.
    """
    del now
    original = bounce.original.to_json() if bounce.original else None
    rows, envelope, certain = apply_envelope(item, [assess_text(r, bounce) for r in bounce.recipients],
                                             original, ctx)
    related, related_why = relation(item, original, bounce.addressed_to, envelope["return_path"]["form"],
                                    envelope.get("unit"), ctx, raw_return_path=bounce.return_path,
                                    raw_from=bounce.from_)
    if not related:
        drop_unrelated(rows, related_why)
    if not act:
        for row in rows:
            if row["outcome"] is not None and not row.get("sent_to"):
                row["outcome"], row["why_none"] = None, "named only in the notice text of a report whose groups name no usable address"
    actions = actions_from_rows(rows, ref=original_ref(original))
    failed = [r for r in rows if r["action"] == "failed"]
    delayed = len(rows) - len(failed)
    words = ", ".join(sorted({f"{r['status']} {r['reason']}" for r in failed})[:3])
    reason = f"bounce ({bounce.form}): " + ", ".join(
        p for p in (f"{len(failed)} failed ({words})" if failed else "", f"{delayed} delayed" if delayed else "") if p)
    evidence: dict[str, Any] = {
        "report_type": "text",
        "form": bounce.form,
        "recipients": rows,
        "original": original,
        "notes": list(bounce.notes),
        **envelope,
        "null_sender": null_sender(item),
        "subject": bounce.subject,
        "related": related,
        "relation": related_why,
    }
    if not related:
        reason = f"{reason}; not acted on: {UNRELATED}: {related_why}"
    review = False
    # A copy pasted into the text is often cut short ("the first 50 lines follow"): a
    # Message-ID missing from it is no sign of forgery, one from elsewhere still is.
    judged = original if not bounce.inline_copy or (original or {}).get("message_id") else None
    if not certain and (forged := forged_original(judged, ctx)):
        actions, review, reason = (), True, f"{reason}; not acted on: {forged}"
        evidence["forged"] = forged
        drop_forged(rows, evidence, forged)
    return Decision(item_id=item.id, kind=Kind.BOUNCE, actions=actions, reason=reason, review=review,
                    verified=certain, source=item.source, evidence=evidence)
