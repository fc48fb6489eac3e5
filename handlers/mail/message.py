"""Parsing one raw RFC 5322 message without ever raising, plus small safe accessors.

Messages become the standard library's `policy.compat32` objects, which keep header
values as the strings that arrived instead of building header objects. Those objects
(what `policy.default` builds) cost more than the rest of classification together:
`get_content_type()` alone parses the Content-Type header again on every call, and a
broken encoded word or address list can raise when a header is *read*, long after
parsing succeeded. The tree is built here (`parse_message`) rather than by the
standard feed parser, which reads every line through a stack of regex matchers; the
helpers decode what a reader needs (RFC 2047 encoded words in `header_text`) from the
raw values, and catch anything that can still throw, turning it into a defect or a
`None`, because bad input is data, not an exception.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.errors
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.parser import BytesParser

# A message nested deeper than this is not walked further (corpus mail m061 nests
# message/rfc822 200 levels deep); no legitimate bounce needs more than a few levels.
MAX_DEPTH = 16
# A message with more parts than this is not walked further: a cheap guard against
# MIME bombs, far above what any real report carries.
MAX_PARTS = 2000
# Characters of one header value that `header_text` decodes and returns. Readers match
# pattern tables (bounce subjects, auto-reply markers) against header text, so a 1 MB
# Subject would cost each table a 1 MB scan; no header a reader needs is this long
# (RFC 5322 section 2.1.1 wants lines under 998 octets, and a folded To list of a few
# hundred recipients stays under it).
MAX_HEADER_TEXT = 32_000
# Characters of a Content-Type value handed to the standard library's parameter reader
# (values with comments, RFC 2231 parameters or quoted pairs). That reader slices the
# rest of the value after every ";" (CPython gh-87075), so its cost grows with the
# square of the value's length; real values, RFC 2231 continuations included, are a
# few hundred characters.
MAX_PARAM_VALUE = 8_000
# Characters of one part's transfer-encoded body that `payload_bytes` decodes. Every
# reader keeps far less of the decoded text (handlers.replies.quotes.MAX_BODY, dsn.MAX_TEXT_SCAN,
# ses.MAX_TEXT: at most 256 KiB), so decoding more of a 20 MB attachment buys nothing.
# Base64 and quoted-printable are undone by binascii, in linear time even when broken.
MAX_ENCODED_PART = 2 * 1024 * 1024
# Header fields of one header block that are kept: the first and the last half of this
# many. Every header lookup of the standard library walks all the fields, and a message
# of 60,000 one-line fields made each lookup, and the garbage collector, cost more than
# linear time. Real mail has a few dozen fields; a long relay chain a hundred Received.
MAX_FIELDS = 1000


class ParserFailure(email.errors.MessageDefect):
    """Parsing raised; the message is what the standard parser made of it, or empty."""


def parse_message(raw: bytes) -> Message:
    """Parse `raw` into a tree of `email.message.Message` objects; never raises.

    The tree is what `BytesParser(policy=compat32)` builds (the same classes, header
    values kept as they arrived, the same payload strings), made by `_entity` below,
    which cuts the text at header/body breaks and MIME boundaries with string
    searches instead of the standard library's line-by-line feed parser, several
    times faster on bounces. Structural defects (RFC 2045/2046: a missing or unmatched
    boundary, a header block without a blank line after it) are kept on each part's
    `defects`, as the standard parser names them. Where a multipart's declared
    boundary never occurs but the body is plainly cut by another one (anonymised or
    rewritten headers: sisimai rhost-google-02), the parts are read at that boundary
    and the defect is still recorded. If parsing raises anyway, the standard parser
    is tried; if that fails too, an empty message carrying a `ParserFailure` defect is
    returned, which `is_unreadable` reports.
    """
    data = raw if isinstance(raw, bytes) else bytes(raw or b"")
    # Blank lines before the header (LF, CR LF or white space only) are a transport's
    # or a file's artefact: without this cut the header would be read as the body.
    lead = _LEADING_BLANK.match(data)
    if lead is not None and lead.end() < len(data):
        data = data[lead.end():]
    try:
        return _entity(data.decode("ascii", "surrogateescape"), 0, "text/plain")
    except Exception as exc:  # noqa: BLE001 - any parser failure is data
        first = f"{type(exc).__name__}"
    try:
        msg = BytesParser(policy=email.policy.compat32).parsebytes(data)
        msg.defects.append(ParserFailure(f"parser raised {first}; read by the standard parser"))
        return msg
    except Exception as exc:  # noqa: BLE001
        empty = EmailMessage()
        empty.defects.append(ParserFailure(f"parser raised {first}, then {type(exc).__name__}"))
        return empty


# Nesting deeper than this is kept as text (corpus mail m061 nests message/rfc822 200
# levels deep); parts beyond MAX_PARSED_PARTS in one message are not made at all.
_LEADING_BLANK = re.compile(rb"(?:[ \t]*(?:\r\n|\n|\r))+")
MAX_PARSE_DEPTH = 40
MAX_PARSED_PARTS = 5000
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n|)")
# A header line (RFC 5322 section 2.2): printable US-ASCII except ":" before the colon.
# Like the standard parser, an empty name is seen as a header line and then refused.
_HEADER_LINE = re.compile(r"[\041-\071\073-\176]*:")
_BLANK_LINE = re.compile(r"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
# A boundary line, for when the declared boundary is missing: "--" and 1-70 boundary
# characters (RFC 2046 section 5.1.1), with a header line after it.
_ANY_BOUNDARY = re.compile(r"^--([0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,69})[ \t]*\r?\n"
                           r"(?=[A-Za-z-]+:)", re.MULTILINE)


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def _entity(text: str, depth: int, default_type: str, budget: _Budget | None = None) -> Message:
    """One MIME entity (RFC 2045 section 2.4): header fields, then its body by type."""
    budget = budget or _Budget()
    budget.parts += 1
    msg = Message()
    if default_type != "text/plain":
        msg.set_default_type(default_type)
    body = _read_headers(msg, text)
    if depth >= MAX_PARSE_DEPTH or budget.parts > MAX_PARSED_PARTS:
        msg.set_payload(body)
        return msg
    kind = content_type(msg)
    if kind == "message/delivery-status":
        # RFC 3464 section 2.1: blocks of fields separated by blank lines; each block
        # becomes a header-only sub-message, as the standard parser represents it.
        for block in _blocks(body):
            msg.attach(_entity(block, depth + 1, "text/plain", budget))
        if not isinstance(msg.get_payload(), list):
            msg.set_payload([])
        return msg
    if kind.startswith("message/"):
        msg.set_payload([_entity(body, depth + 1, "text/plain", budget)])
        return msg
    if kind.startswith("multipart/"):
        _read_multipart(msg, body, kind, depth, budget)
        return msg
    msg.set_payload(body)
    return msg


def _read_headers(msg: Message, text: str) -> str:
    """Set `msg`'s header fields from the start of `text`; return the body after them.

    Follows the standard parser: a first line "From " is the Unix envelope line; a
    line starting with white space continues the field before it (RFC 5322 section
    2.2.3); a line that is not a field ends the block (a defect: RFC 5322 section 2.1
    wants a blank line there) and starts the body.
    """
    if not text or text[0] in "\r\n":
        return text[2:] if text.startswith("\r\n") else text[1:]
    blank = _BLANK_LINE.search(text)
    head_end = blank.start() if blank is not None else len(text)
    # A Unix envelope line ("From sender date", mbox files) is read off first, so that
    # the fields after it take the fast path too; when it is the block's only line, the
    # line-by-line reading below handles it.
    start = text.find("\n") + 1 if text.startswith("From ") else 0
    if start and (text[start] in " \t" or "\r" in text[:start].rstrip("\r\n")):
        start = -1      # a continuation after it, or a CR alone ending a line: line by line
    if blank is not None and 0 <= start <= head_end:
        # The usual case in one regex pass: every line of the block is a field or a
        # continuation, and lines end in LF or CR LF.
        head = text[start:head_end + (2 if text.startswith("\r\n", head_end) else 1)]
        fields = _fast_fields(head)
        if fields is not None:
            if start:
                msg.set_unixfrom(text[:start].rstrip("\r\n"))
            _set_fields(msg, [(name, value.lstrip(" \t").rstrip("\r\n")) for name, value in fields])
            return text[blank.end():]
    lines = _LINES.findall(text, 0, head_end + (2 if text.startswith("\r\n", head_end) else 1))
    fields: list[list[str]] = []
    body_at = blank.end() if blank is not None else len(text)
    pos = 0
    for number, line in enumerate(lines):
        first = line[0]
        if first in " \t":
            if fields:
                fields[-1].append(line)
            else:
                msg.defects.append(email.errors.FirstHeaderLineIsContinuationDefect(line))
        elif number == 0 and line.startswith("From "):
            msg.set_unixfrom(line.rstrip("\r\n"))
        elif first == ":" or _HEADER_LINE.match(line) is None:
            if first == ":":
                msg.defects.append(email.errors.InvalidHeaderDefect(f"Missing header name in {line!r}"))
            else:
                # Not a header line: the body starts here.
                msg.defects.append(email.errors.MissingHeaderBodySeparatorDefect())
                body_at = pos
                break
        else:
            fields.append([line])
        pos += len(line)
    pairs = []
    for parts in fields:
        name, _, value = parts[0].partition(":")
        if len(parts) > 1:
            value = value.lstrip(" \t") + "".join(parts[1:])
        else:
            value = value.lstrip(" \t")
        pairs.append((name, value.rstrip("\r\n")))
    _set_fields(msg, pairs)
    return text[body_at:]


def _set_fields(msg: Message, pairs: list[tuple[str, str]]) -> None:
    """Set the header fields, index the first value of each name, and note the content type.

    Beyond MAX_FIELDS fields, the first and last half of MAX_FIELDS are kept (the fields a
    reader needs open or close a header block) and the message says so in its defects.
    """
    if len(pairs) > MAX_FIELDS:
        msg.defects.append(email.errors.InvalidHeaderDefect(
            f"{len(pairs)} header fields: kept the first and last {MAX_FIELDS // 2}"))
        pairs = pairs[:MAX_FIELDS // 2] + pairs[-(MAX_FIELDS // 2):]
    index: dict[str, str] = {}
    if msg.policy is email.policy.compat32 and isinstance(getattr(msg, "_headers", None), list):
        # What set_raw does under compat32 (its header_store_parse returns the pair as
        # given), without a method call per field.
        msg._headers.extend(pairs)
        for name, value in pairs:
            index.setdefault(name.lower(), value)
    else:
        for name, value in pairs:
            msg.set_raw(name, value)
            index.setdefault(name.lower(), value)
    msg.__dict__[_FIRST] = index
    raw_type = index.get("content-type")
    if raw_type is not None:
        # Message.get_content_type() on the raw value (RFC 2045 section 5.2: a type
        # that is not "type/subtype" means text/plain), without searching the fields again.
        kind = raw_type.partition(";")[0].strip().lower()
        msg.__dict__[_CTYPE] = _clean_kind(kind if kind.count("/") == 1 else "text/plain")


_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_FIELD_LINES = re.compile(r"([\041-\071\073-\176]+):([^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)")


def _fast_fields(head: str) -> list[tuple[str, str]] | None:
    """(name, raw value) of each field when the fields tile `head` exactly, else None."""
    fields: list[tuple[str, str]] = []
    pos = 0
    for match in _FIELD_LINES.finditer(head):
        if match.start() != pos:
            return None
        fields.append((match.group(1), match.group(2)))
        pos = match.end()
    return fields if pos == len(head) else None


def parse_headers(data: bytes) -> Message:
    """A header block alone (text/rfc822-headers, RFC 6522 section 4) as a `Message`; never raises."""
    try:
        msg = Message()
        _read_headers(msg, data.decode("ascii", "surrogateescape"))
        return msg
    except Exception:  # noqa: BLE001 - unreadable headers are simply no headers
        return Message()


def _blocks(body: str) -> list[str]:
    blocks, pos = [], 0
    for match in _BLANK_LINE.finditer(body):
        chunk = body[pos:match.start() + (2 if match.group(0).startswith("\r\n") else 1)]
        if chunk.strip("\r\n"):
            blocks.append(chunk)
        pos = match.end()
    rest = body[pos:]
    if rest.strip("\r\n"):
        blocks.append(rest)
    return [b.lstrip("\r\n") for b in blocks]


def _read_multipart(msg: Message, body: str, kind: str, depth: int, budget: _Budget) -> None:
    """Split a multipart body at its boundary lines (RFC 2046 section 5.1.1)."""
    cte = (msg.get("content-transfer-encoding") or "7bit")
    if str(cte).strip().lower() not in ("7bit", "8bit", "binary"):
        msg.defects.append(email.errors.InvalidMultipartContentTransferEncodingDefect())
    boundary = msg.get_boundary()
    delimiters = _delimiters(body, boundary) if boundary is not None else []
    if not delimiters:
        # No boundary parameter (often a folded "boundary=" line that lost its leading
        # white space, lhost-apachejames-01), or one that never occurs: read the parts at
        # the boundary line the body plainly has, if any.
        msg.defects.append(email.errors.StartBoundaryNotFoundDefect() if boundary is not None
                           else email.errors.NoBoundaryInMultipartDefect())
        found = _ANY_BOUNDARY.search(body)
        delimiters = _delimiters(body, found.group(1).rstrip()) if found else []
        if not delimiters:
            msg.set_payload(body)
            return
    child_type = "message/rfc822" if kind == "multipart/digest" else "text/plain"
    start, _end, _close = delimiters[0]
    if start > 0:
        msg.preamble = _chop_eol(body[:start])
    parts: list[Message] = []
    for (_s, part_start, _c), (next_start, _e, _c2) in zip(delimiters, delimiters[1:]):
        if budget.parts > MAX_PARSED_PARTS:
            break       # a MIME bomb: the parts after this many are not made
        parts.append(_entity(_chop_eol(body[part_start:next_start]), depth + 1, child_type, budget))
    last_start, last_end, last_close = delimiters[-1]
    if last_close:
        msg.epilogue = body[last_end:]
    else:
        msg.defects.append(email.errors.CloseBoundaryNotFoundDefect())
        parts.append(_entity(_chop_eol(body[last_end:]), depth + 1, child_type, budget))
    msg.set_payload(parts)


def _chop_eol(text: str) -> str:
    """`text` without one final line break (CR LF, CR or LF): the one that belongs to the
    boundary line after it (RFC 2046 section 5.1.1). Checked at the end only: a regex
    anchored at the end of the text would be tried at every position of the part."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def _delimiters(body: str, boundary: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_close) of each boundary line: "--" boundary ["--"], trailing blanks."""
    sep = "--" + boundary
    found: list[tuple[int, int, bool]] = []
    size = len(body)
    at = body.find(sep)
    while at >= 0:
        if at == 0 or body[at - 1] in "\r\n":
            after = at + len(sep)
            close = body.startswith("--", after)
            cur = after + 2 if close else after
            while cur < size and body[cur] in " \t":
                cur += 1
            if cur == size or body[cur] in "\r\n":
                line_end = cur + (2 if body.startswith("\r\n", cur) else 1 if cur < size else 0)
                found.append((at, line_end, close))
                if close:
                    break
        at = body.find(sep, at + 1)
    return found


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

    Only the first MAX_HEADER_TEXT characters of the raw value are read.

    The raw value is unfolded (RFC 5322 section 2.2.3) and its RFC 2047 encoded words
    are decoded (see `decode_words`); in address headers a decoded display name that
    contains specials is put in quotes, so that splitting the value at commas stays
    safe ("=?utf-8?q?Doe=2C_John?= <j@x>" gives '"Doe, John" <j@x>'). Bytes that were
    not valid in the header (kept as surrogate escapes by the parser) are decoded as
    UTF-8, else Latin-1, so the result is always a printable `str`.
    """
    raw = raw_header(msg, name)
    if raw is None:
        return None
    text = unfold(raw[:MAX_HEADER_TEXT])
    if "=?" in text:
        text = decode_words(text, quote=name.lower() in _ADDRESS_HEADERS)
    return clean_text(text).strip()


# Headers whose value is an address list (RFC 5322 section 3.6.2-3.6.3).
_ADDRESS_HEADERS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
                              "resent-to", "resent-cc", "resent-bcc"})
# RFC 2047 section 2: =?charset?encoding?encoded-text?= (an RFC 2231 "*language" suffix
# on the charset is allowed and ignored). Runs of encoded words separated only by white
# space are matched together, because that white space is not part of the text (section 6.2).
_WORD = r"=\?([^?\s]{1,60})\?([bBqQ])\?([^?\s]*)\?="
_WORD_RUN = re.compile(rf"{_WORD}(?:[ \t]*{_WORD})*")
_ONE_WORD = re.compile(_WORD)
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_SPECIALS = frozenset('()<>@,;:\\".[]')


def decode_words(text: str, *, quote: bool = False) -> str:
    """Decode the RFC 2047 encoded words in one unfolded header value; never raises.

    Unknown charsets are read as UTF-8 (else Latin-1), undecodable bytes become
    U+FFFD, and a word that is not valid (bad base64, say) is decoded as far as it
    can be. With `quote`, a decoded run containing RFC 5322 specials is returned as a
    quoted string, as a display name must be written.
    """
    def run(match: re.Match[str]) -> str:
        decoded = "".join(_decode_word(*word) for word in _ONE_WORD.findall(match.group(0)))
        if quote and any(c in _SPECIALS for c in decoded):
            return '"' + decoded.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return decoded

    try:
        return _WORD_RUN.sub(run, text)
    except Exception:  # noqa: BLE001 - a header is data
        return text


def _decode_word(charset: str, encoding: str, encoded: str) -> str:
    data = encoded.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        cleaned = data.rstrip(b"=")
        try:
            raw = base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError):
            raw = data
    else:
        raw = _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    name = charset.split("*", 1)[0].strip().lower()
    try:
        if codecs.lookup(name)._is_text_encoding:
            return raw.decode(name, "replace")
    except (LookupError, ValueError, TypeError):
        pass
    return decode_bytes(raw)   # an unknown or non-text charset ("base64", "x-unknown")


def raw_header(msg: Message, name: str) -> str | None:
    """The first `name` header exactly as it arrived (folding kept), or None.

    The first value of each field name is indexed once per message (readers ask
    for a dozen fields, and bounces carry dozens of Received lines).
    """
    try:
        index = msg.__dict__[_FIRST]
    except (KeyError, AttributeError):
        index = {}
        for key, value in raw_items(msg):
            index.setdefault(key.lower(), value)
        try:
            msg.__dict__[_FIRST] = index
        except Exception:  # noqa: BLE001 - an object without attributes is indexed each time
            pass
    return index.get(name.lower())


_FIRST = "_unsubd_first_fields"


def raw_items(msg: Message) -> list[tuple[str, str]]:
    """All header (name, raw value) pairs in order, without building header objects."""
    try:
        return [(str(k), v if isinstance(v, str) else str(v)) for k, v in msg.raw_items()]
    except Exception:  # noqa: BLE001
        return []


def content_type(part: Message) -> str:
    """The part's lower-case `maintype/subtype`; `text/plain` when it cannot be read.

    RFC 2045 section 5.2 defaults (text/plain, or message/rfc822 inside
    multipart/digest) apply. Kept on the part after the first call: readers ask
    for it on every walk.
    """
    try:
        return part.__dict__[_CTYPE]  # type: ignore[no-any-return]
    except (KeyError, AttributeError):
        pass
    try:
        kind = _clean_kind(part.get_content_type().lower())
    except Exception:  # noqa: BLE001
        kind = "text/plain"
    try:
        part.__dict__[_CTYPE] = kind
    except Exception:  # noqa: BLE001 - an object without attributes is asked each time
        pass
    return kind


_CTYPE = "_unsubd_content_type"


def _clean_kind(kind: str) -> str:
    if not kind.isprintable() or " " in kind:
        # A parameter folded onto the next line without its ";" ("text/plain\n
        # charset=..." in lhost-x1-02): the type is the first word.
        return kind.split()[0] if kind.split() else "text/plain"
    return kind


# One `; name=value` or `; name="value"` parameter of a plain Content-Type value.
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*(?:"([^"]*)"|([^\s;"]*))')
_PARAMS = "_unsubd_content_params"


def _plain_params(part: Message) -> dict[str, str] | None:
    """The Content-Type parameters by lower-case name (the first of each), read with one
    regex; None when the value needs the full reader: RFC 2231 (`name*=`), quoted pairs,
    comments, or an unbalanced quote."""
    cached = part.__dict__.get(_PARAMS)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    raw = part.get("content-type")
    if raw is None:
        params: dict[str, str] = {}
    elif not isinstance(raw, str) or "*" in raw or "\\" in raw or "(" in raw or raw.count('"') % 2:
        return None
    else:
        params = {}
        for match in _PARAM.finditer(raw):
            name = match.group(1).lower()
            if name not in params:
                params[name] = match.group(2) if match.group(2) is not None else match.group(3)
    part.__dict__[_PARAMS] = params
    return params


def content_param(part: Message, param: str) -> str | None:
    """A Content-Type parameter as a lower-case stripped string, or None.

    Plain values are read with one regex; others (comments, RFC 2231, quoted pairs)
    by the standard reader, over at most MAX_PARAM_VALUE characters of the value, so
    a parameter written after that many characters is not found.
    """
    try:
        plain = _plain_params(part)
    except Exception:  # noqa: BLE001
        plain = None
    if plain is not None:
        found = plain.get(param.lower())
        return None if found is None else found.strip().lower()
    try:
        raw = part.get("content-type")
        if isinstance(raw, str) and len(raw) > MAX_PARAM_VALUE:
            # The standard reader is quadratic in the value's length: it reads a copy
            # cut to MAX_PARAM_VALUE characters (tests/unit/test_linear_time.py).
            short = Message()
            short.set_raw("Content-Type", raw[:MAX_PARAM_VALUE])
            value = short.get_param(param)
        else:
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
    # What get_payload() returns for a multipart: the stored list (a leaf's text is
    # not wanted here, and get_payload would check its charset and encoding first).
    payload = part.__dict__.get("_payload") if isinstance(part, Message) else None
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def payload_bytes(part: Message) -> bytes:
    """A leaf part's body with its Content-Transfer-Encoding undone; b"" on failure.

    At most MAX_ENCODED_PART characters of the encoded body are decoded. Broken
    base64 is decoded as far as it goes (stray characters skipped, missing padding
    added) and broken quoted-printable keeps the undecodable "=" sequences as they
    are, both by binascii in one linear pass (RFC 2045 sections 6.7-6.8).

    The result is kept on the part: every reader (complaints, SES, DSN, text notices,
    replies) asks for the same few parts, and parsed messages are never changed.
    """
    cached = part.__dict__.get(_DECODED)
    if cached is not None:
        return cached
    data = _payload_bytes(part)
    part.__dict__[_DECODED] = data
    return data


_DECODED = "_unsubd_decoded"
_TEXT = "_unsubd_text"


def _payload_bytes(part: Message) -> bytes:
    try:
        raw = part.get_payload()
        if isinstance(raw, str) and len(raw) > MAX_ENCODED_PART:
            cut = raw.rfind("\n", 0, MAX_ENCODED_PART) + 1 or MAX_ENCODED_PART
            short = Message()
            cte = part.get("content-transfer-encoding")
            if cte is not None:
                short.set_raw("Content-Transfer-Encoding", cte if isinstance(cte, str) else str(cte))
            short.set_payload(raw[:cut])
            data = short.get_payload(decode=True)
        else:
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


# Charsets whose bytes are all ASCII: UTF-8 "decodes" them without error and leaves the
# escape sequences in the text, so the declared charset must be tried first.
_SEVEN_BIT_CHARSETS = ("iso-2022-", "utf-7", "csiso2022")


def part_text(part: Message) -> str:
    """A text part's body as text; never raises.

    UTF-8 first when the bytes are valid UTF-8 (a declared us-ascii or Latin-1 often
    hides UTF-8), except for the 7-bit stateful charsets (ISO-2022-JP, UTF-7), whose
    escape sequences would pass as ASCII; then the declared charset; then Latin-1.
    Kept on the part, as `payload_bytes` is.
    """
    cached = part.__dict__.get(_TEXT)
    if cached is None:
        cached = part.__dict__[_TEXT] = _part_text(part)
    return cached


def _part_text(part: Message) -> str:
    data = payload_bytes(part)
    charset = (content_param(part, "charset") or "").strip().lower()
    candidates = [charset, "utf-8"] if charset.startswith(_SEVEN_BIT_CHARSETS) else ["utf-8", charset]
    for name in candidates:
        if not name:
            continue
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    return decode_bytes(data)


def undo_iso2022(text: str) -> str:
    """Decode ISO-2022-JP escape sequences written raw into a field (Lotus Domino's
    Japanese Diagnostic-Code); text without them, or that is not 7-bit, is returned as is."""
    if "\x1b$" not in text:
        return text
    try:
        return text.encode("ascii").decode("iso-2022-jp")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


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
    At most MAX_PARTS parts and MAX_DEPTH levels are visited, without recursion. The
    walk is made once per message and flag and kept on the message (every reader
    walks the same tree, and parsed messages are never changed afterwards).
    """
    return iter(_walk(msg, into_messages))


def _walk(msg: Message, into_messages: bool) -> list[tuple[Message, Message | None]]:
    cache: dict[bool, list[tuple[Message, Message | None]]] | None = getattr(msg, _WALKS, None)
    if cache is not None and into_messages in cache:
        return cache[into_messages]
    found: list[tuple[Message, Message | None]] = []
    stack: list[tuple[Message, Message | None, int]] = [(msg, None, 0)]
    while stack and len(found) < MAX_PARTS:
        part, parent, depth = stack.pop()
        found.append((part, parent))
        if depth >= MAX_DEPTH:
            continue
        kind = content_type(part)
        if kind.startswith("message/") and not into_messages:
            continue
        children = payload_parts(part)
        for child in reversed(children):
            stack.append((child, part, depth + 1))
    try:
        if cache is None:
            cache = {}
            setattr(msg, _WALKS, cache)
        cache[into_messages] = found
    except Exception:  # noqa: BLE001 - an object that takes no attributes is walked each time
        pass
    return found


_WALKS = "_unsubd_walks"


def _walk_shallow(msg: Message) -> Iterator[Message]:
    for part, _parent in iter_parts(msg):
        yield part


def _defects(part: Message) -> list[email.errors.MessageDefect]:
    try:
        return list(part.defects)
    except Exception:  # noqa: BLE001
        return []
