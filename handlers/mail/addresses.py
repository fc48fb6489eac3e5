"""Address normalisation and hashing: the one way unsubd turns text into an `address`."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


@lru_cache(maxsize=65536)
def normalise(raw: str | None) -> str | None:
    """Return the canonical form of one email address, or None if it is not one.

    Uses email-validator with `check_deliverability=False` (never a DNS lookup).
    The domain is lowercased and IDNA-decoded to Unicode, so `user@xn--bcher-kva.example`
    and `user@bücher.example` are the same address; the local part is lowercased
    too, because every mailbox provider we send to treats it case-insensitively
    (RFC 5321 section 2.4 allows that choice to the receiving domain). Angle brackets,
    surrounding whitespace and an RFC 3464 `rfc822;` address-type prefix are removed
    first. Quoted local parts and domain literals are refused: no newsletter is sent there.

    Special-use names (RFC 6761: `.test`, `.invalid`, `.localhost`, `.local` of RFC 6762,
    `.arpa`, `.onion`) are kept: email-validator refuses them as undeliverable, but an
    address at one is still the address someone gave us, and a bounce for it names it
    (issue 21). Whether to mail it is policy, not reading. A name of one label
    (`user@localhost`) is still refused.
    """
    if not raw:
        return None
    text = raw.strip()
    if text[:7].lower() == "rfc822;":
        text = text[7:].strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text or len(text) > 320 or any(c in text for c in " \t\r\n<>\"\\\x00"):
        return None
    if _PLAIN.fullmatch(text) and len(text) <= 254 and text.find("@") <= 64 and "--" not in text[text.find("@"):]:
        # A plain ASCII dot-atom at an LDH domain with an alphabetic top-level label: what
        # email-validator would return is the text itself, lower-cased (no IDNA, no
        # Unicode normalisation, no quoting), and most addresses in bounces are of this
        # kind. tests/unit/test_bounce_mime.py checks both ways agree.
        return text.lower()
    return _validated(text)


# RFC 5321 section 4.1.2 Dot-string and an LDH domain (RFC 1035 section 2.3.1) whose last
# label is letters: the addresses whose canonical form needs no validator.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.){{1,126}}[A-Za-z]{{2,63}}")


def _validated(text: str) -> str | None:
    """`normalise` by email-validator, for the text it has cleaned (see there)."""
    local, at, domain = text.rpartition("@")
    head, dot, tld = domain.rstrip(".").rpartition(".")
    special = bool(at and dot and head and tld.lower() in SPECIAL_USE)
    if special:
        # Validated with a neutral stand-in for the reserved label, which is put back.
        text = f"{local}@{head}.{_STAND_IN}"
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=True,
                               allow_quoted_local=False, allow_domain_literal=False)
    except (EmailNotValidError, UnicodeError, ValueError):
        return None
    normalized = valid.normalized.lower()
    if special:
        normalized = normalized[:-len(_STAND_IN)] + tld.lower()
    return normalized


# RFC 6761 section 6 and RFC 6762 (.local), RFC 7686 (.onion), RFC 3172 (.arpa).
SPECIAL_USE = frozenset({"test", "invalid", "localhost", "local", "arpa", "onion"})
_STAND_IN = "example"


def address_hash(address: str | None) -> str:
    """A short stable hash for logs: personal data stays out of them."""
    if not address:
        return "-"
    return "h:" + hashlib.sha256(address.encode("utf-8")).hexdigest()[:12]
