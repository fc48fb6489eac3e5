"""The database schema, owned here and migrated by Alembic (worker/store/migrations).

Tables are singular snake_case, timestamps end in `_at` and are stored in UTC.
The same models run on SQLite (embedded) and PostgreSQL (production).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import false, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Unit(Base):
    """A sender unit, mirrored from the settings at start-up (the settings are the source)."""

    __tablename__ = "unit"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name_sv: Mapped[str] = mapped_column(String(200))
    name_nb: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Contact(Base):
    __tablename__ = "contact"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(300))
    origin: Mapped[str] = mapped_column(String(32))        # import, bounce, complaint, optout, ...
    seq: Mapped[int] = mapped_column(BigInteger, default=0)  # last update sequence number published
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The sending system's id for this recipient (its X-NV-Recipient-Id header), from
    # the contacts import: it names the contact of a complaint whose address is redacted.
    recipient_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class Address(Base):
    """An address of a contact. `address` is normalised (handlers.mail.addresses.normalise)."""

    __tablename__ = "address"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="email")
    address: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Preference(Base):
    """Consent for (unit or '*', channel or '*'). The most recently changed matching row wins."""

    __tablename__ = "preference"
    __table_args__ = (UniqueConstraint("contact_id", "unit", "channel"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"))
    unit: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(ForeignKey("event.id"))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Membership(Base):
    """A unit a contact is on (from an import). Consent is apart: see Preference."""

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("contact_id", "unit"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"))
    unit: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str | None] = mapped_column(ForeignKey("event.id"))
    joined_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Suppression(Base):
    """An address that must not be mailed, whatever the preferences say."""

    __tablename__ = "suppression"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    event_id: Mapped[str | None] = mapped_column(ForeignKey("event.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Event(Base):
    """Append-only evidence: one row per decision, deduplicated by the item's key."""

    __tablename__ = "event"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    review: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    evidence: Mapped[dict[str, Any]] = mapped_column(Json)
    # Indexed: the console's dashboard reads a range of days, retention the events before a date.
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class EventAddress(Base):
    """Which addresses (and contacts) an event concerns, for `contacts show`."""

    __tablename__ = "event_address"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("event.id"), index=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"), index=True)


class InboundItem(Base):
    """The embedded queue: received items, kept raw until processed (and beyond, as evidence)."""

    __tablename__ = "inbound_item"
    __table_args__ = (Index("ix_inbound_item_status_available_at", "status", "available_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    mail_from: Mapped[str | None] = mapped_column(String(1000))
    rcpt_tos: Mapped[list[str]] = mapped_column(Json)
    source: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))        # pending, processing, done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    available_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The process (and queue) holding the lease while `processing` (worker.queue.embedded.Claimer),
    # so that a consumer starting on the same machine takes back a dead one's items at once.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    # In flight when its consumer died: handled alone from then on, so that a crash while it
    # is the only item in flight is its own fault and counts as an attempt (worker.queue.embedded).
    crashed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


# An erasure and an export look up the messages sent from an address whatever its case
# (migration 0012): without this, each scans every received message.
Index("ix_inbound_item_lower_mail_from", func.lower(InboundItem.mail_from))


class Outbox(Base):
    """Updates waiting to be (or already) published, in order per contact by `sequence`.

    `claimed_until`: the consumer that wrote the row publishes it itself right after its
    commit (worker.outbox.relay.Handoff); relays leave the row alone until then, and publish it
    after that if it is still unpublished (that consumer died or the broker refused).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("contact_id", "sequence"),
        Index("ix_outbox_published_at_id", "published_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("event.id"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    routing_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SoftBounce(Base):
    """A temporary failure for an address, counted by the soft-bounce policy.

    One row per (address, bounced message): duplicate reports about one message count
    once. `cleared_at` is set when the address shows it is alive again (its owner
    acts on their consent) or an operator releases it; cleared rows no longer count.
    """

    __tablename__ = "soft_bounce"
    __table_args__ = (UniqueConstraint("address", "ref"), Index("ix_soft_bounce_address_occurred_at",
                                                                 "address", "occurred_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    ref: Mapped[str] = mapped_column(String(320))       # the bounced message, or the event id when unknown
    status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(ForeignKey("event.id"))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ReviewItem(Base):
    """Something a person must look at: an unclear decision, or a rights request with its deadline.

    Events stay append-only; the review's own life (resolved, and how) lives here, and
    the resolution is an event of its own.
    """

    __tablename__ = "review_item"
    __table_args__ = (Index("ix_review_item_resolved_at_id", "resolved_at", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("event.id"))
    kind: Mapped[str] = mapped_column(String(32))              # decision, rights_request
    reason: Mapped[str] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(320))   # whom it concerns, when known
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    resolution: Mapped[str | None] = mapped_column(String(32))
    resolution_event_id: Mapped[str | None] = mapped_column(String(36))


class Tombstone(Base):
    """What is left of an erased address: a keyed hash that still blocks mail to it (DESIGN promise 7).

    `digest` is HMAC-SHA256(key `key_id`, normalised address) in hex
    (handlers.events.rights.tombstone_digest); the address itself is gone. `optouts`
    are the (unit, channel) opt-outs it keeps, (*, *) always among them; `suppression`
    the reason of the suppression it had. When the address comes back (an import, a
    bounce, an emailed request), handlers.state.plan writes these again for it.
    """

    __tablename__ = "tombstone"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16))
    optouts: Mapped[list[list[str]]] = mapped_column(Json)
    suppression: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(ForeignKey("event.id"))
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsoleUser(Base):
    """Someone who signs in to the operator console (worker.console): a member of staff,
    not a data subject. `password_hash` is an Argon2id hash (argon2-cffi); `role` is
    viewer, operator or admin; `failed_logins` counts wrong passwords since the last
    sign-in, and `locked_until` holds the account shut after too many of them;
    `last_sign_in_at` is the last correct password (shown on the console's users page)."""

    __tablename__ = "console_user"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ConsoleSession(Base):
    """A signed-in console session. `id` is the SHA-256 of the cookie's random value (the
    cookie itself is never stored); `csrf_secret` makes the session's form tokens."""

    __tablename__ = "console_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("console_user.id"), index=True)
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SentCount(Base):
    """Messages sent on one day by one unit on one channel, as the sending systems report
    them (the denominator of the complaint rate on the console's dashboard)."""

    __tablename__ = "sent_count"
    __table_args__ = (UniqueConstraint("day", "unit", "channel"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    unit: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(BigInteger)
    reported_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
