"""What a bounce says about one recipient: its RFC 3463 status code and the words of
its diagnostic, read into a reason (handlers.bounces.status) and hard or soft.

Shared by every bounce reader: the DSN reader (handlers.bounces.dsn) and the text
notice reader (handlers.bounces.text).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from handlers.bounces import patterns
from handlers.bounces.status import BounceReason
from handlers.mail.needles import NeedleFinder


R = BounceReason


# RFC 3463 section 3 (and RFC 7505 for X.1.10), keyed by "subject.detail", then by
# "subject". Each row is (reason, concerns_address): True when the code says the
# recipient address itself is bad, which together with class 5 makes a hard bounce.
# X.1.7 and X.1.8 are about *our* sender address, X.1.5 and X.1.9 are not failures
# of the address, so they are not hard. X.2.1 "mailbox disabled" is the one mailbox
# code that concerns the address; X.2.2 "mailbox full" is temporary by nature.
# X.4.4 "unable to route" is the one network code that concerns the address: RFC 3463
# gives "a DNS lookup returning only an SOA record" as its example, i.e. the domain
# has no mail host (Postfix and Exchange use 5.4.4 for a domain that does not exist).
STATUS_TABLE: dict[str, tuple[BounceReason, bool]] = {
    "1.0": (R.USER_UNKNOWN, True),
    "1.1": (R.USER_UNKNOWN, True),
    "1.2": (R.HOST_UNKNOWN, True),
    "1.3": (R.USER_UNKNOWN, True),
    "1.4": (R.USER_UNKNOWN, True),
    "1.5": (R.OTHER, False),
    "1.6": (R.HAS_MOVED, True),
    "1.7": (R.SENDER_ADDRESS, False),
    "1.8": (R.SENDER_ADDRESS, False),
    "1.9": (R.OTHER, False),
    "1.10": (R.HOST_UNKNOWN, True),
    "2.1": (R.NOT_ACCEPTING, True),
    "2.2": (R.MAILBOX_FULL, False),
    "2.3": (R.MESSAGE_TOO_BIG, False),
    "2.4": (R.SYSTEM_ERROR, False),
    "3.4": (R.MESSAGE_TOO_BIG, False),
    "4.4": (R.HOST_UNKNOWN, True),
    "4.7": (R.EXPIRED, False),
    "7.13": (R.SUSPENDED, True),    # "User Account Disabled" (IANA Enhanced Status Codes registry)
    "0": (R.OTHER, False),
    "1": (R.USER_UNKNOWN, True),
    "2": (R.OTHER, False),
    "3": (R.SYSTEM_ERROR, False),
    "4": (R.NETWORK_ERROR, False),
    "5": (R.PROTOCOL_ERROR, False),
    "6": (R.CONTENT_ERROR, False),
    "7": (R.POLICY, False),
}


del R


def status_meaning(status: str | None) -> tuple[BounceReason, bool]:
    """(reason, hard) for an RFC 3463 code, from STATUS_TABLE; hard needs class 5.

    None or an unknown code gives (OTHER, False).
    """
    if not status:
        return BounceReason.OTHER, False
    klass, _, rest = status.partition(".")
    subject = rest.partition(".")[0]
    reason, concerns_address = STATUS_TABLE.get(rest) or STATUS_TABLE.get(subject) or (BounceReason.OTHER, False)
    return reason, concerns_address and klass == "5"


def text_reason(text: str | None) -> BounceReason | None:
    """The reason the diagnostic `text` gives in words (bounce_patterns.REASON_PATTERNS), or None.

    The first row that matches wins; None for None, empty or unrecognised text.
    """
    if not text:
        return None
    return _text_reason(text[:4000])


# An address (local@domain), inside angle brackets or not.
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


@lru_cache(maxsize=1024)
def _text_reason(text: str) -> BounceReason | None:
    # Cached on the text as given: one notice's text is asked about several times
    # (recipient lines, the whole notice, the DSN's diagnostic and its context), and
    # lowering it and blanking its addresses cost as much as the search.
    lowered = text.lower()
    if "@" in lowered:
        # Words inside an address are names, not reasons: the mailbox filtered@ or
        # expired@ says nothing about why mail to it bounced. (Links stay: a blocklist
        # lookup URL is the reason, rhost-godaddy-02.)
        lowered = _ADDRESS.sub(" ", lowered)
    # Each row as Words.search_lowered reads it, with the needles of all rows found in
    # one pass (most texts give no reason, so every row's gate is asked about them).
    rows, finder = _reason_rows()
    present = finder.present(lowered)
    for reason, needles, scan in rows:
        if (needles is None or not present.isdisjoint(needles)) and scan.search(lowered) is not None:
            return reason
    return None


@cache
def _reason_rows() -> tuple[tuple[tuple[BounceReason, tuple[str, ...] | None, re.Pattern[str]], ...], NeedleFinder]:
    rows = tuple((reason, *pattern.gate_and_scan()) for reason, pattern in patterns.REASON_PATTERNS)
    return rows, NeedleFinder([n for _reason, needles, _scan in rows for n in needles or ()])


def explain(status: str | None, text: str | None, *, default_class: str | None = None,
            context: str | None = None) -> tuple[str | None, BounceReason, bool, str]:
    """(status, reason, hard, status_source) for one failed recipient (RFC 3463, issue 3 taxonomy).

    * The reason comes from the words of the diagnostic `text` when they name one
      (a 5.1.1 whose text says "mailbox full" is a full mailbox: remote servers pick
      codes loosely), else from the code (STATUS_TABLE). A recipient-side reason
      given after DATA (bounce_patterns.AFTER_DATA) with no code about the address
      is read as policy: the address was accepted at RCPT, so a filter refused the
      content (a server that checks recipients at the end of DATA and says so with
      5.1.1 means the mailbox, lhost-mfilter-02); one given
      in reply to MAIL FROM or HELO (BEFORE_RCPT) is about our sender. `context`
      (the notice text around the recipient) is searched for those two only.
    * A missing `status` is derived from the reason (REASON_STATUS), with class 4
      when the text says the failure is temporary, else `default_class`, else 5
      when the text says it is permanent or names a reason. A generic X.0.0 that
      the remote server wrote is kept as written (its class is a fact; the detail
      it lacks is carried by the reason word). With no code, no class and no
      reason, the status stays None.
    * hard is True only for a recipient-side reason (user_unknown, host_unknown,
      has_moved, not_accepting) with class 5, or a suspended account with class 5
      whose text does not say it is temporary (`is_hard`).
    `status_source` is "text" when the code was derived here, "given" otherwise.
    Never raises; odd input gives (status, OTHER, False, "given").
    """
    worded = text_reason(text)
    stage = f"{text or ''}\n{context or ''}"[:6000]
    if worded in patterns.HARD_REASONS and not status_meaning(status)[1] and (
            patterns.AFTER_DATA.search(stage) or patterns.DATA_REPLY.search(stage)):
        # Said after DATA with no code about the address: the address was accepted
        # at RCPT and a filter refused the content (see bounce_patterns.DATA_REPLY).
        worded = BounceReason.POLICY
    if patterns.BEFORE_RCPT.search(stage) and (worded is None or worded in patterns.HARD_REASONS):
        worded = BounceReason.SENDER_ADDRESS
    coded, _hard = status_meaning(status)
    specific = bool(status) and not status.endswith(".0.0")  # type: ignore[union-attr]
    reason = worded or coded
    source = "given"
    if not specific:
        klass = status[0] if status else None
        if klass is None:
            if text and patterns.TEMPORARY_WORDS.search(text[:4000]):
                klass = "4"
            elif default_class:
                klass = default_class
            elif text and (worded or patterns.PERMANENT_WORDS.search(text[:4000])):
                klass = "5"
        if klass is not None and status is None:
            status = f"{klass}.{patterns.REASON_STATUS.get(reason, '0.0')}"
            source = "text"
    if not status:
        return None, reason, False, source
    return status, reason, is_hard(reason, status, text), source


def is_hard(reason: BounceReason, status: str | None, text: str | None = None) -> bool:
    """A permanent problem with the address itself: a recipient-side reason with class 5;
    or an account that is disabled, deactivated, closed or suspended (issue 21), with
    class 5, unless the text says it is temporary."""
    if not status or not status.startswith("5."):
        return False
    if status_meaning(status)[0] is BounceReason.SENDER_ADDRESS:
        # X.1.7/X.1.8 name our sender's address: whatever the words say ("Domain of sender
        # address ... does not exist", lhost-sendmail-04) is about it, not the recipient's.
        return False
    if reason in patterns.HARD_REASONS:
        return True
    return reason is BounceReason.SUSPENDED and not patterns.TEMPORARILY.search((text or "")[:4000])


def notice_context(notice: str, address: str | None) -> str:
    """The notice text around the first mention of `address`: the SMTP stage it failed at.

    "" when either is empty or the address is not mentioned. Shared with handlers.bounces.text.

    Postfix writes "(in reply to end of DATA command)" and Sendmail a ">>> DATA"
    transcript line next to the recipient in the human-readable part, not in the
    report (lhost-sendmail-02, lhost-postfix-07).
    """
    if not notice or not address:
        return ""
    at = notice.lower().find(address.lower())
    if at < 0:
        return ""
    return notice[max(0, at - 200):at + len(address) + 300]
