"""Unsubscribe tokens: signed, compact, URL-safe proof of (contact, unit, channel). Pure.

A token is the base64url text (RFC 4648 section 5, no padding) of

    version  1 byte   0x01
    kid      1 byte length n (1..16), then n ASCII bytes: the id of the signing key
    contact  unsigned LEB128 varint, minimal form, 1..2**63-1
    unit     1 byte length n (0..63), then n ASCII bytes; n = 0 means '*' (every unit)
    channel  1 byte: 0 '*', 1 email, 2 sms, 3 phone, 4 letter, 5 web
    mac      16 bytes: HMAC-SHA256(key, DOMAIN || everything above), truncated (128 bits)

so a token for contact 12345, unit `alumni`, channel `email` under key `k1` is 40
characters. The MAC input starts with a purpose label, so a MAC made for another
purpose with the same key (the form check below, or a future return-path token)
can never pass as an unsubscribe token.

Opt-out tokens carry no expiry on purpose: a link in a mail from years ago must
still work (DESIGN.md, Tokens). Revoking them means retiring their key.

Several keys may verify (rotation): new links are signed with the active key, and
links signed with an older key keep working while that key is still configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from config.settings import Settings
from handlers.model import WILDCARD, Channel

VERSION = 1
MAC_BYTES = 16                        # 128 bits: forging one needs ~2**128 tries
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 256                 # anything longer is not ours; refused before decoding
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
UNIT_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
CHANNEL_CODES: dict[str, int] = {WILDCARD: 0, **{c.value: i for i, c in enumerate(Channel, start=1)}}
CHANNEL_NAMES = {code: name for name, code in CHANNEL_CODES.items()}
TOKEN_PURPOSE = b"unsubd/preference-token/v1\x00"
FORM_PURPOSE = b"unsubd/page-form/v1\x00"


@dataclass(frozen=True)
class Claims:
    """What a valid token says: whose preferences, for which unit and channel ('*' = all)."""

    contact_id: int
    unit: str
    channel: str
    key_id: str = ""


@dataclass(frozen=True)
class Keyring:
    """The keys that verify tokens (`secrets`, by key id) and the one that signs new ones."""

    secrets: Mapping[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a keyring needs at least one key")
        for kid, secret in self.secrets.items():
            if not KEY_ID.match(kid):
                raise ValueError(f"key id {kid!r}: use 1 to 16 letters, digits, '-' or '_'")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"key {kid!r} is shorter than {MIN_SECRET_BYTES} bytes")
        if self.active not in self.secrets:
            raise ValueError(f"the active key {self.active!r} is not one of the keys")


def _mac(secret: bytes, purpose: bytes, body: bytes) -> bytes:
    return hmac.new(secret, purpose + body, hashlib.sha256).digest()[:MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decode canonical unpadded base64url, or None.

    Canonical means re-encoding gives the same text: the spare low bits of the last
    character must be zero, so no two strings decode to the same token.
    """
    if not text or len(text) > MAX_TOKEN_CHARS or not B64URL.match(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None
    return data if _b64(data) == text else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when truncated, too long or not minimal."""
    value = shift = 0
    for i in range(pos, min(len(data), pos + 9)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > pos:
                return None                     # a trailing zero group: not the minimal form
            return value, i + 1
    return None


def _body(claims: Claims) -> bytes:
    kid = claims.key_id.encode("ascii")
    unit = b"" if claims.unit == WILDCARD else claims.unit.encode("ascii")
    return (bytes([VERSION, len(kid)]) + kid + _varint(claims.contact_id) + bytes([len(unit)]) + unit
            + bytes([CHANNEL_CODES[claims.channel]]))


def _open(data: bytes | None, min_fields: int, mac_bytes: int, purpose: bytes,
          keyring: Keyring) -> tuple[bytes, str, bytes, int, int] | None:
    """(body, key id, secret, contact id, position after it) of a decoded token whose
    version, key id and MAC check out and whose contact id is a minimal varint >= 1.

    `min_fields` is the least number of bytes the version, the key-id length, one
    key-id byte and the shortest fields after them take; the MAC is compared in
    constant time. Fields after the contact id are the caller's to parse, strictly.
    """
    if data is None or len(data) < min_fields + mac_bytes or data[0] != VERSION:
        return None
    body, mac = data[:-mac_bytes], data[-mac_bytes:]
    n = body[1]
    kid_bytes = body[2:2 + n]
    if not 1 <= n <= 16 or len(kid_bytes) != n:
        return None
    kid = kid_bytes.decode("ascii")
    secret = keyring.secrets.get(kid)
    if secret is None or not KEY_ID.match(kid):
        return None
    if not hmac.compare_digest(mac, _mac(secret, purpose, body)[:mac_bytes]):
        return None
    read = _read_varint(body, 2 + n)
    if read is None or read[0] < 1:
        return None
    return body, kid, secret, read[0], read[1]


def sign(contact_id: int, unit: str, channel: str, keyring: Keyring) -> str:
    """A token for (contact_id, unit or '*', channel or '*'), signed with the active key.

    Raises ValueError for claims no token can carry (contact id not in 1..2**63-1, a
    unit that is not a unit key, an unknown channel): these are programming errors,
    never recipient input.
    """
    if not isinstance(contact_id, int) or not 1 <= contact_id < 2**63:
        raise ValueError(f"contact id out of range: {contact_id!r}")
    if unit != WILDCARD and not UNIT_KEY.match(unit):
        raise ValueError(f"not a unit key: {unit!r}")
    if channel not in CHANNEL_CODES:
        raise ValueError(f"not a channel: {channel!r}")
    body = _body(Claims(contact_id, unit, channel, keyring.active))
    return _b64(body + _mac(keyring.secrets[keyring.active], TOKEN_PURPOSE, body))


def verify(token: str, keyring: Keyring) -> Claims | None:
    """The claims of a valid token, or None. Never raises, whatever `token` is.

    None for: text that is not canonical base64url, a wrong version, an unknown key
    id, a malformed field, trailing bytes, or a MAC that does not match (compared in
    constant time, RFC 2104 section 5 truncation to 128 bits).
    """
    try:
        data = _unb64(token) if isinstance(token, str) else None
        opened = _open(data, 1 + 1 + 1 + 1 + 1 + 1, MAC_BYTES, TOKEN_PURPOSE, keyring)
        if opened is None:
            return None
        # The MAC matched, so the fields are ours; they are still parsed strictly.
        body, kid, _secret, contact_id, pos = opened
        if pos >= len(body):
            return None
        ulen = body[pos]
        unit_bytes = body[pos + 1:pos + 1 + ulen]
        pos += 1 + ulen
        if len(unit_bytes) != ulen or pos + 1 != len(body):
            return None
        unit = unit_bytes.decode("ascii") if ulen else WILDCARD
        channel = CHANNEL_NAMES.get(body[pos])
        if contact_id < 1 or channel is None or (unit != WILDCARD and not UNIT_KEY.match(unit)):
            return None
        return Claims(contact_id=contact_id, unit=unit, channel=channel, key_id=kid)
    except (UnicodeDecodeError, IndexError, ValueError, TypeError):
        return None


def form_proof(token: str, issued_at: int, keyring: Keyring, nonce: str = "") -> str:
    """The anti-forgery value for a preference-page form: `issued_at.nonce.mac` (unix
    seconds, then the caller's random nonce), or `issued_at.mac` without a nonce.

    It binds the form to the token it was rendered for and to the time it was
    rendered, under the active key and a purpose label of its own. The nonce (letters,
    digits, '-' and '_', at most 32) makes every rendering's proof distinct, so that a
    save can be made single-use by its proof (handlers.events.page.save keys the save
    by it), even for two renderings in one second.
    """
    if nonce and not _NONCE.match(nonce):
        raise ValueError("a form nonce is 1 to 32 URL-safe characters")
    body = f"{issued_at}:{nonce}:{token}" if nonce else f"{issued_at}:{token}"
    mac = _b64(_mac(keyring.secrets[keyring.active], FORM_PURPOSE, body.encode("utf-8")))
    return f"{issued_at}.{nonce}.{mac}" if nonce else f"{issued_at}.{mac}"


_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def check_form_proof(proof: str, token: str, keyring: Keyring, now: int, max_age: int) -> bool:
    """Whether `proof` was made by form_proof for `token`, by any configured key, at most
    `max_age` seconds before `now` (and not in the future beyond a minute of clock skew).
    Never raises. Whether it was used before is not its business (that is state: the
    save's item id, handlers.events.page.save)."""
    try:
        parts = proof.split(".")
        if len(parts) == 2:
            (stamp, mac_text), nonce = parts, ""
        elif len(parts) == 3 and _NONCE.match(parts[1]):
            stamp, nonce, mac_text = parts
        else:
            return False
        if not stamp.isdigit() or len(stamp) > 12:
            return False
        issued_at = int(stamp)
        if not (now - max_age <= issued_at <= now + 60):
            return False
        mac = _unb64(mac_text)
        if mac is None or len(mac) != MAC_BYTES:
            return False
        body = (f"{issued_at}:{nonce}:{token}" if nonce else f"{issued_at}:{token}").encode("utf-8")
        return any(hmac.compare_digest(mac, _mac(secret, FORM_PURPOSE, body)) for secret in keyring.secrets.values())
    except (AttributeError, TypeError, ValueError, UnicodeEncodeError):
        return False


MAX_LOCAL_PART = 64                   # RFC 5321 section 4.5.3.1.1

# --------------------------------------------------------------------------- return paths
#
# A signed return path (VERP) is `<bounce_local>+TOKEN@<bounce domain>`; a bounce to it
# says, with certainty, which message it answers. Its TOKEN is the base32 text (RFC 4648
# section 6, lowercase, no padding) of
#
#     version  1 byte   0x01
#     kid      1 byte length n (1..16), then n ASCII bytes
#     contact  unsigned LEB128 varint, minimal form
#     unit     3 bytes: the first bytes of SHA-256(unit key); 000000 means '*'
#     address  4 bytes: HMAC-SHA256(key, ADDRESS_PURPOSE || address), truncated
#     mac      8 bytes: HMAC-SHA256(key, RETURN_PATH_PURPOSE || everything above), truncated
#
# Base32 because mail systems may change the case of a local part (RFC 5321 section
# 2.4 lets them); digests instead of the unit key and the address so that the local
# part stays within RFC 5321's 64 octets (a token for key `k1` and contact 12345 is 34
# characters) and the return path does not carry the address in readable form. The
# digests are checked against what the bounce names (the address) and against the
# configured units; 64 bits of MAC suffice here because every forgery attempt costs
# the forger a delivered message.

RETURN_PATH_PURPOSE = b"unsubd/return-path/v1\x00"
ADDRESS_PURPOSE = b"unsubd/return-path-address/v1\x00"
RETURN_PATH_MAC_BYTES = 8
UNIT_DIGEST_BYTES = 3
ADDRESS_DIGEST_BYTES = 4
_ANY_UNIT = bytes(UNIT_DIGEST_BYTES)
B32 = re.compile(r"^[A-Za-z2-7]+$")


@dataclass(frozen=True)
class ReturnPathClaims:
    """What a valid return-path token says. `unit` is the configured unit key its digest
    names, '*' for every unit, or None when no configured unit matches (a unit renamed
    since the mail was sent)."""

    contact_id: int
    unit: str | None
    address_digest: bytes
    key_id: str
    secret: bytes = field(default=b"", repr=False, compare=False)   # the verifying key, for `names`

    def names(self, address: str | None) -> bool:
        """Whether `address` (normalised) is the one the return path was issued for."""
        if not address:
            return False
        return hmac.compare_digest(self.address_digest, _address_digest(self.secret, address))


def _address_digest(secret: bytes, address: str) -> bytes:
    return hmac.new(secret, ADDRESS_PURPOSE + address.encode("utf-8"), hashlib.sha256).digest()[:ADDRESS_DIGEST_BYTES]


def _unit_digest(unit: str) -> bytes:
    if unit == WILDCARD:
        return _ANY_UNIT
    return hashlib.sha256(unit.encode("ascii")).digest()[:UNIT_DIGEST_BYTES]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes | None:
    """Decode canonical unpadded base32 in either case, or None."""
    if not text or len(text) > MAX_LOCAL_PART or not B32.match(text) or len(text) % 8 in (1, 3, 6):
        return None
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, TypeError):
        return None
    return data if _b32(data) == text.lower() else None


def sign_return_path(contact_id: int, address: str, unit: str, keyring: Keyring) -> str:
    """The return-path token for mail from `unit` (or '*') to `address` of `contact_id`.

    `address` must be the normalised address the message is sent to (handlers.mail.addresses).
    Raises ValueError for claims no token can carry (programming errors).
    """
    if not isinstance(contact_id, int) or not 1 <= contact_id < 2**63:
        raise ValueError(f"contact id out of range: {contact_id!r}")
    if unit != WILDCARD and not UNIT_KEY.match(unit):
        raise ValueError(f"not a unit key: {unit!r}")
    if not address or "@" not in address:
        raise ValueError("not an address")
    kid = keyring.active.encode("ascii")
    secret = keyring.secrets[keyring.active]
    body = (bytes([VERSION, len(kid)]) + kid + _varint(contact_id) + _unit_digest(unit)
            + _address_digest(secret, address))
    return _b32(body + _mac(secret, RETURN_PATH_PURPOSE, body)[:RETURN_PATH_MAC_BYTES])


def verify_return_path(token: str, keyring: Keyring, units: Any = ()) -> ReturnPathClaims | None:
    """The claims of a valid return-path token, or None. Never raises.

    `units` are the configured unit keys, to name the unit behind the unit digest.
    """
    try:
        data = _unb32(token) if isinstance(token, str) else None
        opened = _open(data, 1 + 1 + 1 + 1 + UNIT_DIGEST_BYTES + ADDRESS_DIGEST_BYTES, RETURN_PATH_MAC_BYTES,
                       RETURN_PATH_PURPOSE, keyring)
        if opened is None:
            return None
        body, kid, secret, contact_id, pos = opened
        if pos + UNIT_DIGEST_BYTES + ADDRESS_DIGEST_BYTES != len(body):
            return None
        unit_digest = body[pos:pos + UNIT_DIGEST_BYTES]
        unit: str | None = WILDCARD if unit_digest == _ANY_UNIT else None
        if unit is None:
            unit = next((u for u in units if _unit_digest(u) == unit_digest), None)
        return ReturnPathClaims(contact_id=contact_id, unit=unit, address_digest=body[pos + UNIT_DIGEST_BYTES:],
                                key_id=kid, secret=secret)
    except (UnicodeDecodeError, IndexError, ValueError, TypeError):
        return None


def return_path(token: str, bounce_local: str, bounce_domain: str) -> str:
    """The envelope sender (SMTP MAIL FROM, which becomes Return-Path) for one message."""
    return f"{bounce_local}+{token}@{bounce_domain}"



def link_headers(token: str, base_url: str, unsubscribe_local: str, mail_domain: str) -> dict[str, str]:
    """The unsubscribe header fields a sender puts on one message for `token`.

    List-Unsubscribe (RFC 2369 section 3.2) carries the https URI first, then the
    mailto URI `unsubscribe+TOKEN@mail_domain`; List-Unsubscribe-Post (RFC 8058
    section 3.1) makes the https URI one-click. RFC 8058 section 4 requires both to
    be covered by the message's DKIM signature. The mailto URI is left out when its
    local part would exceed the 64 octets RFC 5321 allows (long unit keys), since
    mail to it might then never arrive; the https URI always works.
    """
    url = f"{base_url.rstrip('/')}/u/{token}"
    uris = [f"<{url}>"]
    local = f"{unsubscribe_local}+{token}"
    if len(local) <= MAX_LOCAL_PART:
        uris.append(f"<mailto:{local}@{mail_domain}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(uris), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def reply_address(token: str, reply_address_of_unit: str) -> str | None:
    """The Reply-To address `local+TOKEN@domain` for one message, or None when too long.

    A reply to it proves that the mail reached the token's contact, so an opt-out
    written in the reply is verified (handlers.replies.reply). `reply_address_of_unit` is the
    unit's own reply address, or the shared `reply@` address. None when the local
    part would exceed RFC 5321's 64 octets; the plain address then still works,
    unverified.
    """
    local, _, domain = reply_address_of_unit.rpartition("@")
    tagged = f"{local}+{token}"
    return f"{tagged}@{domain}" if local and domain and len(tagged) <= MAX_LOCAL_PART else None


def keyring_from_settings(settings: Settings) -> Keyring | None:
    """The keyring in `settings.tokens.keys`, or None when there are no keys (then no token verifies).

    The worker fills these in from the embedded key file before classification
    (worker.store.keys.settings_with_keys), so the sandboxed classifier can verify tokens.
    Handlers read it from their Context (handlers.context), built once.
    """
    tokens = settings.tokens
    if not tokens.keys:
        return None
    try:
        return Keyring({k: v.get_secret_value().encode("utf-8") for k, v in tokens.keys.items()},
                       tokens.active_key_id)
    except ValueError:
        return None


def scope(claims: Claims) -> tuple[Any, Any]:
    """(units, channels) of an Action for what the token covers: '*' means all."""
    units: Any = "all" if claims.unit == "*" else (claims.unit,)
    channels: Any = "all" if claims.channel == "*" else (claims.channel,)
    return units, channels
