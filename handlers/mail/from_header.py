"""Whose message is this: a strict reading of the From header (RFC 5322 section 3.6.2).

`email.utils.parseaddr`/`getaddresses` are not used for identity: Python 3.11's
parser returns the victim for `alice@victim.example<bob@evil.example>`
(CVE-2023-27043). This module accepts exactly one mailbox in one From field, in one
of the two forms of RFC 5322 section 3.4 (`addr-spec`, or `[display-name] <addr-spec>`,
optionally with comments), and refuses everything else with a reason a reviewer
can read. Refusing is the safe direction: the message then goes to review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message

from handlers.mail.addresses import normalise
from handlers.mail.message import clean_text, raw_items, unfold

MAX_FROM = 998          # RFC 5322 section 2.1.1 line limit: longer is not a real From
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'@,;:()]+@[^\s<>\"'@,;:()]+\.[^\s<>\"'@,;:()]+")


@dataclass(frozen=True)
class Sender:
    """The result of reading From: `address` is set only when it is unambiguous."""

    address: str | None
    display_name: str = ""
    problem: str | None = None
    raw: str | None = None


def read_sender(msg: Message) -> Sender:
    """Return the single normalised From mailbox, or a Sender with `problem` set.

    Problems (address None): no From; more than one From field (RFC 5322 section
    3.6 allows one); a group or several mailboxes; more than one angle address; an
    encoded word (RFC 2047) outside the display name, where section 5 forbids it;
    a display name whose decoded text contains an address other than the mailbox
    (`"alice@victim.example" <attacker@evil.example>`) or angle brackets; an address
    email-validator refuses. Never raises.
    """
    try:
        froms = [v for k, v in raw_items(msg) if k.lower() == "from"]
    except Exception:  # noqa: BLE001
        froms = []
    if not froms:
        return Sender(None, problem="no From header")
    if len(froms) > 1:
        return Sender(None, problem=f"{len(froms)} From headers", raw=clean_text(froms[0])[:200])
    raw = clean_text(unfold(froms[0])).strip()
    if len(raw) > MAX_FROM:
        return Sender(None, problem="From header too long", raw=raw[:200])
    return parse_mailbox(raw)


def parse_mailbox(raw: str) -> Sender:
    """Parse one From value strictly; see read_sender for what is refused."""
    try:
        tokens = _tokens(raw)
    except ValueError as exc:
        return Sender(None, problem=str(exc), raw=raw[:200])
    angles = [t for t in tokens if t[0] == "angle"]
    words = [t for t in tokens if t[0] in ("word", "quoted")]
    specials = [t for t in tokens if t[0] == "special"]
    if specials:
        return Sender(None, problem=f"unexpected {specials[0][1]!r} in From (group or list)", raw=raw[:200])
    if len(angles) > 1:
        return Sender(None, problem="more than one <address> in From", raw=raw[:200])
    if angles:
        spec = angles[0][1].strip()
        display_parts = [t for t in tokens if t[0] in ("word", "quoted")]
        if tokens[-1][0] != "angle" and any(t[0] in ("word", "quoted") for t in tokens[tokens.index(angles[0]):]):
            return Sender(None, problem="text after <address> in From", raw=raw[:200])
        display = " ".join(_decode_words(t[1]) if t[0] == "word" else t[1] for t in display_parts).strip()
    else:
        if len(words) != 1 or words[0][0] != "word":
            return Sender(None, problem="From is not a single address", raw=raw[:200])
        spec, display = words[0][1], ""
    if _ENCODED_WORD.search(spec):
        return Sender(None, problem="encoded word inside the address", raw=raw[:200])
    if spec.count("@") != 1:
        return Sender(None, problem="address does not have exactly one '@'", raw=raw[:200])
    address = normalise(spec)
    if address is None:
        return Sender(None, problem="not a valid address", raw=raw[:200])
    if "<" in display or ">" in display:
        return Sender(None, problem="angle brackets inside the display name", raw=raw[:200])
    for other in _ADDRESS_LIKE.findall(display):
        if normalise(other) != address:
            return Sender(None, problem="display name contains a different address", display_name=display[:200],
                          raw=raw[:200])
    return Sender(address, display_name=display[:200], raw=raw[:200])


def _tokens(raw: str) -> list[tuple[str, str]]:
    """Split a From value into words, quoted strings, one angle address, specials.

    Comments (RFC 5322 section 3.2.2, nestable) are dropped. Raises ValueError for
    unbalanced quotes, comments or brackets.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c in " \t":
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and raw[j] != '"':
                if raw[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(raw[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated quoted string in From")
            out.append(("quoted", "".join(buf)))
            i = j + 1
        elif c == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                if raw[j] == "\\":
                    j += 1
                elif raw[j] == "(":
                    depth += 1
                elif raw[j] == ")":
                    depth -= 1
                j += 1
            if depth:
                raise ValueError("unterminated comment in From")
            i = j
        elif c == "<":
            j = raw.find(">", i + 1)
            if j < 0:
                raise ValueError("unterminated <address> in From")
            inner = raw[i + 1:j]
            if "<" in inner:
                raise ValueError("nested '<' in From")
            out.append(("angle", inner))
            i = j + 1
        elif c in ">,;:[]\\":
            out.append(("special", c))
            i += 1
        else:
            j = i
            while j < n and raw[j] not in ' \t"(<>,;:[]\\':
                j += 1
            out.append(("word", raw[i:j]))
            i = j
    return out


def _decode_words(word: str) -> str:
    if "=?" not in word:
        return word
    try:
        return clean_text(str(make_header(decode_header(word))))
    except Exception:  # noqa: BLE001 - an undecodable display name is kept as written
        return word
