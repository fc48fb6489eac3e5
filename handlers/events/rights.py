"""Data-subject rights (GDPR Art. 15 and 17): erasure that keeps "no", and what it scrubs. Pure.

An erased address lives on only as a tombstone: HMAC-SHA256 of the normalised address
under a key with an id (the token keyring's keys, with a purpose label of its own, so
that a tombstone digest can never pass as a token MAC or the other way round). The
tombstone keeps the address's opt-outs and suppression; when the address comes back
(an import, a bounce, an emailed request) handlers.state.plan writes them again, and
a pre-send lookup that finds no contact finds the tombstone (DESIGN promise 7).

Because a digest cannot be recomputed without the address, a key that has made
tombstones must stay in the keyring (it may stop being the active one): removing it
unblocks the addresses erased under it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import quopri
import re
import uuid
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from handlers.model import Action, ActionType, Decision, Kind
from handlers.tokens import Keyring

TOMBSTONE_PURPOSE = b"unsubd/erasure-tombstone/v1\x00"
ERASED = "[erased]"


def tombstone_digest(secret: bytes, address: str) -> str:
    """HMAC-SHA256(secret, purpose || address) in lowercase hex (64 characters).

    `address` must already be normalised (handlers.mail.addresses.normalise): the same
    person's address written differently must give the same digest.
    """
    return hmac.new(secret, TOMBSTONE_PURPOSE + address.encode("utf-8"), hashlib.sha256).hexdigest()


def active_digest(keyring: Keyring, address: str) -> tuple[str, str]:
    """(key id, digest) under the keyring's active key: what a new tombstone is written with."""
    return keyring.active, tombstone_digest(keyring.secrets[keyring.active], address)


def all_digests(keyring: Keyring, address: str) -> dict[str, str]:
    """digest -> key id under every key of the keyring: what a lookup searches for, so that
    tombstones written under an older key still block."""
    return {tombstone_digest(secret, address): kid for kid, secret in keyring.secrets.items()}


def erase(addresses: Sequence[str], reason: str, operator: str, keyring: Keyring) -> Decision:
    """The command that erases `addresses` (normalised; a contact's every address), kept as tombstones.

    Raises ValueError for no address or an empty reason. The reason is kept with the
    event, with any of the addresses in it replaced (the audit record never names the
    person). Every run is a new item (an address erased, then imported again, may be
    erased again); erasing what is already erased changes nothing but the record.
    """
    why = reason.strip()
    if not why:
        raise ValueError("an erasure needs a reason (kept in the audit record, without the address)")
    if not addresses:
        raise ValueError("nothing to erase: no address")
    why = scrub(why, addresses)
    actions = tuple(Action(ActionType.ERASE, a, reason="erasure", ref=":".join(active_digest(keyring, a)))
                    for a in dict.fromkeys(addresses))
    return Decision(item_id=f"erase:{uuid.uuid4()}", kind=Kind.ADMIN, source="erasure", verified=True,
                    operator=operator, actions=actions, reason=f"erased at the person's request: {why[:500]}",
                    evidence={"operator_reason": why[:2000],
                              "tombstones": [dict(zip(("key_id", "digest"), a.ref.split(":", 1)))
                                             for a in actions if a.ref]})


def encodings(address: str) -> list[str]:
    """The forms an address commonly takes in stored text: as written, upper case,
    URL-encoded (RFC 3986), quoted-printable (RFC 2045 6.7) and base64 (RFC 4648).
    Compare case-insensitively, except base64."""
    raw = address.encode("utf-8")
    forms = [address, address.upper(), quote(address, safe=""), quote(address, safe="@"),
             quopri.encodestring(raw).decode("ascii").strip(), address.replace("@", "=40"),
             base64.b64encode(raw).decode("ascii").rstrip("=")]        # base64 last: scrub() relies on it
    return list(dict.fromkeys(f for f in forms if f))


def scrub(text: str, addresses: Iterable[str]) -> str:
    """`text` with every occurrence of the addresses (in the forms of `encodings`) replaced by
    "[erased]"; case-insensitive for all but base64. Never raises."""
    for address in addresses:
        *caseless, base64_form = encodings(address)
        for form in caseless:
            text = re.sub(re.escape(form), ERASED, text, flags=re.IGNORECASE)
        text = text.replace(base64_form, ERASED)
    return text


def scrub_json(value: Any, addresses: Sequence[str]) -> Any:
    """A JSON value with every string scrubbed (`scrub`), keys included."""
    if isinstance(value, str):
        return scrub(value, addresses)
    if isinstance(value, Mapping):
        return {scrub(str(k), addresses): scrub_json(v, addresses) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_json(v, addresses) for v in value]
    return value


def redact_actions(actions: Any, addresses: Sequence[str]) -> Any:
    """Stored actions (Action.to_json) with the erased addresses replaced by null and any
    other string scrubbed."""
    if not isinstance(actions, list):
        return scrub_json(actions, addresses)
    erased = {a.lower() for a in addresses}
    out = []
    for act in actions:
        if isinstance(act, Mapping):
            act = {**act}
            if isinstance(act.get("address"), str) and act["address"].lower() in erased:
                act["address"] = None
            act = scrub_json(act, addresses)
        out.append(act)
    return out
