"""Parsing one raw RFC 5322 message without ever raising, plus small safe accessors.

The standard library's `email` package is lenient, but not everywhere: the parser
can hit the recursion limit on absurd nesting, and header objects are built lazily
under `policy.default`, so a broken encoded word or address list can raise when a
header is *read*, long after parsing succeeded. Everything here catches that and
turns it into a defect or a `None`, because bad input is data, not an exception.
"""

from __future__ import annotations

import email.errors
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.parser import BytesParser

# A message nested deeper than this is not walked further (corpus mail m061 nests
# message/rfc822 200 levels deep); no legitimate bounce needs more than a few levels.
MAX_DEPTH = 16
# A message with more parts than this is not walked further: a cheap guard against
# MIME bombs, far above what any real report carries.
MAX_PARTS = 2000


class ParserFailure(email.errors.MessageDefect):
    """The parser itself raised; the message is kept as an empty `EmailMessage`."""


def parse_message(raw: bytes) -> EmailMessage:
    """Parse `raw` with `policy.default` and return the message; never raises.

    Defects the parser noticed are kept on `msg.defects` (and on each part's). If the
    modern parser raises (e.g. `RecursionError` on very deep nesting), the bytes are
    parsed again with `policy.compat32`, which builds no header objects; if that
    fails too, an empty `EmailMessage` carrying a `ParserFailure` defect is returned.
    The result of the compat32 fallback is a plain `Message` at runtime; callers
    should use the helpers in this module, which accept both.
    """
    data = raw if isinstance(raw, bytes) else bytes(raw or b"")
    try:
        return BytesParser(policy=email.policy.default).parsebytes(data)  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - any parser failure is data
        first = f"{type(exc).__name__}"
    try:
        msg = BytesParser(policy=email.policy.compat32).parsebytes(data)
        msg.defects.append(ParserFailure(f"policy.default parser raised {first}; parsed with compat32"))
        return msg  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001
        empty = EmailMessage()
        empty.defects.append(ParserFailure(f"parser raised {first}, then {type(exc).__name__}"))
        return empty


def has_headers(msg: Message) -> bool:
    """True if the parser found at least one header field."""
    try:
        return len(msg.keys()) > 0
    except Exception:  # noqa: BLE001
        return False


def is_unreadable(msg: Message) -> bool:
    """True if there is nothing to reason about: no header at all, or the parser gave up.

    A message whose first line is not a header (RFC 5322 section 2.2) gets no headers
    from the parser and its whole text becomes the body; that is not mail we can read.
    """
    if any(isinstance(d, ParserFailure) for d in _defects(msg)):
        return True
    return not has_headers(msg)


def describe_defects(msg: Message) -> str:
    """Short human text naming what is wrong with `msg`, for an unreadable decision.

    Returns e.g. "no header fields; MissingHeaderBodySeparatorDefect". Lists at most
    five distinct defect names from the top-level message and its direct parts; says
    "no defects noticed" when there are none.
    """
    words: list[str] = []
    if not has_headers(msg):
        words.append("no header fields")
    seen: set[str] = set()
    for part in _walk_shallow(msg):
        for defect in _defects(part):
            name = type(defect).__name__
            if isinstance(defect, ParserFailure):
                name = str(defect)
            if name not in seen:
                seen.add(name)
                words.append(name)
    if len(words) > 5:
        words = words[:5] + [f"{len(words) - 5} more"]
    return "; ".join(words) if words else "no defects noticed"


def header_text(msg: Message, name: str) -> str | None:
    """The decoded text of the first `name` header, or None if absent; never raises.

    Encoded words (RFC 2047) are decoded when they can be. If building the header
    object raises (malformed encoded words or address lists trip some parser paths),
    the raw value is returned instead, unfolded. Bytes that were not valid in the
    header (kept as surrogate escapes by the parser) are decoded as UTF-8 with
    replacement characters, so the result is always a printable `str`.
    """
    try:
        value = msg.get(name)
        if value is None:
            return None
        return clean_text(unfold(str(value))).strip()
    except Exception:  # noqa: BLE001 - fall back to the raw header
        pass
    raw = raw_header(msg, name)
    return None if raw is None else clean_text(unfold(raw)).strip()


def raw_header(msg: Message, name: str) -> str | None:
    """The first `name` header exactly as it arrived (folding kept), or None."""
    wanted = name.lower()
    for key, value in raw_items(msg):
        if key.lower() == wanted:
            return value
    return None


def raw_items(msg: Message) -> list[tuple[str, str]]:
    """All header (name, raw value) pairs in order, without building header objects."""
    try:
        return [(str(k), v if isinstance(v, str) else str(v)) for k, v in msg.raw_items()]
    except Exception:  # noqa: BLE001
        return []


def content_type(part: Message) -> str:
    """The part's lower-case `maintype/subtype`; `text/plain` when it cannot be read."""
    try:
        return part.get_content_type().lower()
    except Exception:  # noqa: BLE001
        return "text/plain"


def content_param(part: Message, param: str) -> str | None:
    """A Content-Type parameter as a lower-case stripped string, or None."""
    try:
        value = part.get_param(param)
    except Exception:  # noqa: BLE001
        return None
    if value is None:
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value).strip().lower()


def payload_parts(part: Message) -> list[Message]:
    """The sub-messages of a multipart or message/* part; an empty list otherwise."""
    try:
        payload = part.get_payload()
    except Exception:  # noqa: BLE001
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def payload_bytes(part: Message) -> bytes:
    """A leaf part's body with its Content-Transfer-Encoding undone; b"" on failure."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        return b""
    return data if isinstance(data, bytes) else b""


def decode_bytes(data: bytes) -> str:
    """Decode bytes as UTF-8, falling back to Latin-1 (which cannot fail)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def clean_text(text: str) -> str:
    """Turn surrogate escapes (undecodable bytes kept by the parser) back into text."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return decode_bytes(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # lone surrogates that were never bytes
        return text.encode("utf-8", "replace").decode("utf-8")


def unfold(text: str) -> str:
    """Undo RFC 5322 section 2.2.3 folding: CRLF/LF followed by whitespace."""
    return " ".join(line.strip() for line in text.splitlines()) if "\n" in text or "\r" in text else text


def iter_parts(msg: Message, *, into_messages: bool = False) -> Iterator[tuple[Message, Message | None]]:
    """Yield (part, parent) for `msg` and its descendants, depth-first, bounded.

    Does not descend into `message/*` parts unless `into_messages` is set: a returned
    original or a forwarded message is someone else's mail, not part of this report.
    At most MAX_PARTS parts and MAX_DEPTH levels are visited, without recursion.
    """
    stack: list[tuple[Message, Message | None, int]] = [(msg, None, 0)]
    count = 0
    while stack and count < MAX_PARTS:
        part, parent, depth = stack.pop()
        count += 1
        yield part, parent
        if depth >= MAX_DEPTH:
            continue
        kind = content_type(part)
        if kind.startswith("message/") and not into_messages:
            continue
        children = payload_parts(part)
        for child in reversed(children):
            stack.append((child, part, depth + 1))


def _walk_shallow(msg: Message) -> Iterator[Message]:
    for part, _parent in iter_parts(msg):
        yield part


def _defects(part: Message) -> list[email.errors.MessageDefect]:
    try:
        return list(part.defects)
    except Exception:  # noqa: BLE001
        return []
