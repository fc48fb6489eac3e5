"""The returned original inside a bounce: the headers of the message we sent, as far
as the bouncing server gave them back (RFC 3464 section 2, RFC 6522 section 3).

Shared by the DSN reader (handlers.bounces.dsn) and the text notice reader
(handlers.bounces.text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from handlers.mail.message import (content_type, header_text, parse_headers, payload_bytes, payload_parts, raw_items,
                                   undo_iso2022)

MAX_VALUE = 1000        # characters kept of any one field value (diagnostics run long)


# Content types that carry the machine-readable report (RFC 3464 section 2.1,
# RFC 6533 section 6.2 for the UTF-8 variant).
STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


# Content types that carry the returned message or its headers (RFC 6522 section 3,
# RFC 3462, RFC 6532/6533 for the global variants).
ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")


@dataclass(frozen=True)
class ReturnedOriginal:
    """Headers of the returned message (RFC 3464 section 2, third part), as plain strings."""

    message_id: str | None = None
    from_: str | None = None
    to: str | None = None
    x_original_to: str | None = None    # the envelope recipient the receiving MTA recorded (Postfix)
    list_id: str | None = None
    recipient_id: str | None = None     # X-NV-Recipient-Id, set on everything unsubd's senders send
    return_path: str | None = None      # our signed VERP return path, when the original kept it
    list_unsubscribe: str | None = None  # our List-Unsubscribe, whose URIs carry a signed token

    def to_json(self) -> dict[str, str | None]:
        return {"message_id": self.message_id, "from": self.from_, "to": self.to,
                "x_original_to": self.x_original_to, "list_id": self.list_id, "recipient_id": self.recipient_id,
                "return_path": self.return_path, "list_unsubscribe": self.list_unsubscribe}


def returned_original(part: Message) -> ReturnedOriginal | None:
    """The identifying headers of one returned-message part (message/rfc822, or the
    text/rfc822-headers form), or None when it has none. Shared with handlers.bounces.text."""
    headers = _original_headers(part)
    return None if headers is None else _identifying(headers)


MAX_INLINE = 32_000     # characters of a pasted copy searched for its header block
MAX_INLINE_LINES = 200  # header lines read of it (an original's header is rarely longer)
# A header field's first line (RFC 5322 section 2.2: printable ASCII but ":" and space,
# then ":"); a continuation line starts with white space.
_FIELD_LINE = re.compile(r"[!-9;-~]{1,76}:")


def inline_original(copy: str | None) -> ReturnedOriginal | None:
    """The identifying headers of a copy of the original pasted into a text notice, or None.

    Text notices return the message in their own body after a marker line (qmail-send's
    "--- Below this line is a copy of the message.", Exim's "------ This is a copy of the
    message, including all the headers. ------", "Original message follows."). `copy`
    is the text from that marker on: the marker line and blank lines are skipped (the
    marker may itself be the first header, "Return-Path: <...>"), and the header block
    is read up to the first blank line (RFC 5322 section 2.1). None when no header
    field starts within the first lines, or none of the fields names the message.
    Linear in the text read; never raises.
    """
    if not copy:
        return None
    lines = copy[:MAX_INLINE].splitlines()
    start = 0
    while start < min(len(lines), 4) and not _FIELD_LINE.match(lines[start]):
        start += 1
    block: list[str] = []
    keep = False
    for line in lines[start:start + MAX_INLINE_LINES]:
        if not line.strip():
            break
        field = _FIELD_LINE.match(line)
        if field is None and line[:1] not in (" ", "\t"):
            break       # neither a field nor a continuation line: the header has ended
        if field is not None:
            # Only the fields _identifying reads (and their continuation lines) are
            # parsed: a pasted header is mostly Received lines.
            keep = line[:field.end() - 1].strip().lower() in _IDENTIFYING
        if keep:
            block.append(line)
    if not block:
        return None
    return _identifying(parse_headers("\n".join(block).encode("utf-8", "surrogateescape") + b"\n"))


_IDENTIFYING = frozenset({"message-id", "from", "to", "x-original-to", "list-id", "x-nv-recipient-id", "return-path",
                          "list-unsubscribe"})


def _identifying(headers: Message) -> ReturnedOriginal | None:
    original = ReturnedOriginal(
        message_id=_cut(header_text(headers, "Message-ID")),
        from_=_cut(header_text(headers, "From")),
        to=_cut(header_text(headers, "To")),
        x_original_to=_cut(header_text(headers, "X-Original-To")),
        list_id=_cut(header_text(headers, "List-Id")),
        recipient_id=_cut(header_text(headers, "X-NV-Recipient-Id")),
        return_path=_cut(header_text(headers, "Return-Path")),
        list_unsubscribe=_cut(header_text(headers, "List-Unsubscribe")),
    )
    return original if any(original.to_json().values()) else None


def _original_headers(part: Message) -> Message | None:
    if content_type(part).endswith("-headers"):
        return parse_headers(payload_bytes(part))
    inner = payload_parts(part)
    return inner[0] if inner else None


def _cut(value: str | None, limit: int = MAX_VALUE) -> str | None:
    if value is None:
        return None
    value = undo_iso2022(value.strip())
    return value if len(value) <= limit else value[:limit]


# The headers that say where a bounce was delivered: our VERP address, when the
# envelope is not known (a file), is in one of them.
ADDRESSED_TO_HEADERS = frozenset({"to", "delivered-to", "x-original-to", "envelope-to"})


def addressed_to(msg: Message) -> tuple[str, ...]:
    """Raw values of a bounce's own To, Delivered-To, X-Original-To and Envelope-To
    headers (at most 20, each cut to MAX_VALUE characters), in order. Shared by the
    DSN and text readers."""
    values = [value[:MAX_VALUE] for name, value in raw_items(msg) if name.lower() in ADDRESSED_TO_HEADERS]
    return tuple(values[:20])
