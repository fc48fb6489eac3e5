"""Plain values that flow through unsubd: what came in, and what was decided about it.

Nothing here does I/O. Every type is immutable and picklable, because decisions are
made in a sandboxed worker process and sent back to the event loop.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping

ALL: Literal["all"] = "all"
WILDCARD = "*"


class Kind(enum.StrEnum):
    """What an inbound item turned out to be (the `kind` of `unsubd classify --json`)."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    OPTOUT = "optout"
    AUTOREPLY = "autoreply"
    REPLY = "reply"
    CLICK = "click"
    ADMIN = "admin"                # an operator's action (release of a suppression, a review settled)
    IMPORT = "import"              # a contacts import: who is on which unit; never consent
    UNKNOWN = "unknown"


class ActionType(enum.StrEnum):
    SUPPRESS = "suppress"          # the address must not be mailed (deliverability)
    SOFT_BOUNCE = "soft_bounce"    # a temporary or sender-side failure: counted, no state change yet
    UNSUBSCRIBE = "unsubscribe"    # consent withdrawn for (units, channels)
    SUBSCRIBE = "subscribe"        # consent given again (needs proof: see DESIGN promise 6)
    RELEASE = "release"            # an operator lifts a suppression
    DELIVERED = "delivered"        # a report that mail reached the address: a sign of life
    JOIN = "join"                  # the contact is on `units` (membership, from an import): never consent
    ERASE = "erase"                # forget the address (issue 23): only a keyed hash stays, still blocking;
                                   # `ref` is "<key id>:<digest>" (handlers.events.rights.tombstone_digest)
    NOTE = "note"                  # an operator's note about the address: names it, changes nothing
    CHANGE_ADDRESS = "change_address"  # rectification (issue 23): the contact of `address` moves to
                                       # `new_address`, keeping its consent and history


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    LETTER = "letter"
    WEB = "web"


class State(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"
    RELEASED = "released"
    JOINED = "joined"              # the contact is on a unit's list (membership; consent is apart)
    ERASED = "erased"              # the contact's personal data is gone; its "no" lives on as a tombstone
    ADDRESS_CHANGED = "address_changed"   # the contact's address was corrected (rectification)


Scope = tuple[str, ...] | Literal["all"]


def item_key(*parts: bytes | str | None) -> str:
    """A stable dedupe key: the same envelope and bytes always give the same key.

    An SMTP client that resends a message after losing our 250 produces the same key,
    so the second copy is recognised instead of being applied twice.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else (part or "").encode("utf-8", "surrogateescape")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:40]


@dataclass(frozen=True)
class Inbound:
    """One received item, exactly as it arrived. `raw` is never modified."""

    id: str
    raw: bytes
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    received_at: datetime
    source: str = "smtp"

    @classmethod
    def from_smtp(
        cls, raw: bytes, mail_from: str | None, rcpt_tos: tuple[str, ...] | list[str], received_at: datetime
    ) -> Inbound:
        rcpts = tuple(rcpt_tos)
        key = item_key("smtp", mail_from, "\n".join(rcpts), raw)
        return cls(id=key, raw=raw, mail_from=mail_from, rcpt_tos=rcpts, received_at=received_at)

    @classmethod
    def from_file(cls, raw: bytes, name: str, received_at: datetime) -> Inbound:
        """An item read from disk by `unsubd classify`: no envelope."""
        return cls(id=item_key("file", raw), raw=raw, mail_from=None, rcpt_tos=(), received_at=received_at,
                   source="file")


@dataclass(frozen=True)
class Action:
    """One state change a decision asks for. `address` is normalised (see handlers.mail.addresses)."""

    type: ActionType
    address: str
    status: str | None = None          # RFC 3463 enhanced status code, e.g. "5.1.1"
    reason: str | None = None          # a word from the reason taxonomy, e.g. "user_unknown"
    hard: bool | None = None           # for bounces: a permanent problem with the address itself
    units: Scope = ALL
    channels: Scope = ALL
    diagnostic: str | None = None      # the remote server's own words, kept as evidence
    ref: str | None = None             # the message this concerns (the bounced original's Message-ID):
                                       # duplicate reports about one message count once
    contact_id: int | None = None      # set when a signed token names the contact but not the address:
                                       # apply() acts on that contact's email address
    recipient_id: str | None = None    # the sending system's id for the contact (X-NV-Recipient-Id),
                                       # when nothing else names it: apply() looks the contact up.
                                       # On a JOIN: the id the import gives the contact
    name: str | None = None            # JOIN only: the contact's name, as imported
    new_address: str | None = None     # CHANGE_ADDRESS only: the address the contact moves to (normalised)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "address": self.address,
            "status": self.status,
            "reason": self.reason,
            "hard": self.hard,
            "units": self.units if self.units == ALL else list(self.units),
            "channels": self.channels if self.channels == ALL else list(self.channels),
            "diagnostic": self.diagnostic,
            "ref": self.ref,
            "contact_id": self.contact_id,
            "recipient_id": self.recipient_id,
            **({"name": self.name} if self.name is not None else {}),
            **({"new_address": self.new_address} if self.new_address is not None else {}),
        }


@dataclass(frozen=True)
class Decision:
    """What one inbound item means. An empty `actions` tuple means "ignore".

    `reason` is written for a person reviewing the item ("dsn 5.1.1 user unknown").
    `evidence` is a JSON-able mapping kept with the event row.

    `confidence` (0..1) says how sure the classifier is that `kind` and `actions` are
    what the item means; it is not a calibrated probability but a ranking an
    operator and the review queue can read:

    * high (0.85 and above; HIGH = 0.95, CERTAIN = 0.99): a structurally parsed
      report (RFC 3464 DSN, RFC 5965 ARF), a request proven by a signed token, an
      auto-reply marked in its header, a clear opt-out phrase in the sender's own
      Subject or first sentences, in one language;
    * medium (0.6 up to 0.85; MEDIUM = 0.75): a bounce read from MTA text, an opt-out
      found only late in a long text, in several languages, with a weak phrase, or
      beside a sentence that points the other way;
    * low (below REVIEW_BELOW = 0.6): not decided confidently. An emailed opt-out this
      low is never acted on without a person: it becomes a review item whose reason
      names the doubts.

    None means the decider did not say; `confidence_of` then gives the default for
    the kind (handlers.classify fills in per-reader defaults, so that a DSN and a
    bounce read from text differ). `to_json` shows the number and its level.
    """

    item_id: str
    kind: Kind
    actions: tuple[Action, ...] = ()
    reason: str = ""
    review: bool = False
    verified: bool = False
    source: str = "smtp"
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    confidence: float | None = None
    operator: str | None = None        # who decided, for a person's action: a login, a user, an API key's name

    @classmethod
    def ignore(cls, item_id: str, kind: Kind, reason: str, **kw: Any) -> Decision:
        return cls(item_id=item_id, kind=kind, actions=(), reason=reason, **kw)

    @classmethod
    def unreadable(cls, item_id: str, reason: str, **kw: Any) -> Decision:
        """Nothing we can act on, but a person should look at it."""
        return cls(item_id=item_id, kind=Kind.UNKNOWN, actions=(), reason=reason, review=True, **kw)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "actions": [a.to_json() for a in self.actions],
            "review": self.review,
            "verified": self.verified,
            "confidence": confidence_of(self),
            "confidence_level": confidence_level(confidence_of(self)),
            "why": self.reason,
        }


# Confidence levels (see Decision). Numbers, so the review queue can sort by them.
CERTAIN = 0.99          # proven by a signed token, or an operator's own action
HIGH = 0.95
MEDIUM = 0.75
LOW = 0.4
REVIEW_BELOW = 0.6      # an emailed opt-out below this goes to a person
HIGH_FROM = 0.85

# What a kind means when its decider gave no confidence of its own.
KIND_CONFIDENCE: dict[Kind, float] = {
    Kind.BOUNCE: MEDIUM, Kind.COMPLAINT: HIGH, Kind.OPTOUT: MEDIUM, Kind.AUTOREPLY: MEDIUM,
    Kind.REPLY: MEDIUM, Kind.CLICK: CERTAIN, Kind.ADMIN: CERTAIN, Kind.IMPORT: CERTAIN, Kind.UNKNOWN: LOW,
}


def confidence_of(decision: Decision) -> float:
    """The decision's confidence, or its kind's default when the decider gave none; in 0..1."""
    value = decision.confidence
    if value is None:
        value = KIND_CONFIDENCE.get(decision.kind, LOW)
    return round(min(1.0, max(0.0, float(value))), 2)


def confidence_level(value: float) -> str:
    """'high', 'medium' or 'low' for a confidence value (see Decision)."""
    if value >= HIGH_FROM:
        return "high"
    return "medium" if value >= REVIEW_BELOW else "low"
