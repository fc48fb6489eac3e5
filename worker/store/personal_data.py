"""The registry of personal data: every column of every table, what kind of data it holds
about a person, and what erasure does with it (issue 23).

It drives `unsubd contacts export` (which tables and columns are a person's data) and
`unsubd contacts erase` (worker.store.erasure implements exactly the rules named here,
and tests/unit/test_personal_data.py fails when a model gains a column that is not
classified, or when a rule has no implementation).

Kinds:

    identifier  names the person directly: an address, the sending system's recipient id
    name        the person's name
    content     free text or JSON that may quote the person (evidence, reasons, payloads)
    raw         received bytes (whole messages)
    pseudonym   a number that links rows to one person but says nothing by itself (contact id)
    consent     what the person chose, or what was decided about them (kept as a tombstone)
    none        not about a person (times, states, unit keys, our own ids)

Retention (`retain`): the classes of `[retention]` that change the column when its
period is over (worker.store.retention implements exactly these): `raw_mail` blanks a
handled message's bytes, sender and error; `evidence` replaces an event's reason and
evidence by a marker; `events` deletes a whole event no row refers to (and its
event_address rows), or empties it like `evidence`; `review_items` deletes a resolved
review item. Contacts past their period are erased by the rules below.

Erasure rules (`erase`):

    keep        left as it is
    delete      the row is deleted (the row as a whole is about the person)
    null        set to NULL
    blank       set to an empty value (raw mail: b""; recipient lists: [])
    scrub       every occurrence of the address, in every common encoding, replaced
    redact      JSON: addresses replaced (actions, outbox payloads), or evidence replaced
                by a marker when the event concerns only the erased person
    anonymise   a fixed value in place of the old one (contact.origin: "erased")
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("identifier", "name", "content", "raw", "pseudonym", "consent", "none")
# Retention classes (worker.ops.retention): `contacts` follows the erasure rules above; the
# others name the columns they change in `retain`.
RETENTION_CLASSES = ("raw_mail", "evidence", "events", "review_items")
RULES = ("keep", "delete", "null", "blank", "scrub", "redact", "anonymise")


@dataclass(frozen=True)
class Field:
    table: str
    column: str
    kind: str
    erase: str
    note: str = ""
    retain: tuple[str, ...] = ()     # the retention classes that remove or empty it (worker.store.retention)

    @property
    def personal(self) -> bool:
        return self.kind != "none"


def _f(table: str, column: str, kind: str, erase: str = "keep", note: str = "", retain: tuple[str, ...] = ()) -> Field:
    assert kind in KINDS and erase in RULES and set(retain) <= set(RETENTION_CLASSES), (table, column)
    # A whole event goes with the `events` class (its event_address rows with it).
    if table in ("event", "event_address"):
        retain = tuple(dict.fromkeys(("events", *retain)))
    if table == "review_item":
        retain = ("review_items",)
    return Field(table, column, kind, erase, note, retain)


FIELDS: tuple[Field, ...] = (
    # unit: the organisation's own sender units
    *(_f("unit", c, "none") for c in ("key", "name_sv", "name_nb", "name_en", "updated_at")),
    # contact: the row stays, anonymised, so that published sequences and outbox rows keep their contact id
    _f("contact", "id", "pseudonym", note="kept: consumers know it; nothing links it to a person any more"),
    _f("contact", "name", "name", "null"),
    _f("contact", "origin", "none", "anonymise"),
    _f("contact", "seq", "none"),
    _f("contact", "created_at", "none"),
    _f("contact", "updated_at", "none"),
    _f("contact", "recipient_id", "identifier", "null"),
    # address: every address of the contact
    _f("address", "id", "none", "delete"),
    _f("address", "contact_id", "pseudonym", "delete"),
    _f("address", "channel", "none", "delete"),
    _f("address", "address", "identifier", "delete"),
    _f("address", "created_at", "none", "delete"),
    # preference and membership: the "no"s live on in the tombstone
    *(_f("preference", c, k, "delete") for c, k in (
        ("id", "none"), ("contact_id", "pseudonym"), ("unit", "consent"), ("channel", "consent"),
        ("state", "consent"), ("reason", "consent"), ("source", "consent"), ("event_id", "none"),
        ("changed_at", "consent"))),
    *(_f("membership", c, k, "delete") for c, k in (
        ("id", "none"), ("contact_id", "pseudonym"), ("unit", "consent"), ("source", "none"),
        ("event_id", "none"), ("joined_at", "consent"))),
    # suppression: by address; its reason lives on in the tombstone
    *(_f("suppression", c, k, "delete") for c, k in (
        ("id", "none"), ("address", "identifier"), ("contact_id", "pseudonym"), ("reason", "consent"),
        ("active", "consent"), ("event_id", "none"), ("created_at", "consent"), ("released_at", "consent"))),
    # event: append-only evidence; the row stays (what happened, when), the person goes
    _f("event", "id", "none"),
    _f("event", "item_id", "none", note="a hash of envelope and bytes: names nobody"),
    _f("event", "kind", "none"),
    _f("event", "source", "none"),
    _f("event", "reason", "content", "scrub", retain=("evidence",)),
    _f("event", "review", "none"),
    _f("event", "verified", "none"),
    _f("event", "actions", "content", "redact"),
    _f("event", "evidence", "content", "redact", retain=("evidence",)),
    _f("event", "occurred_at", "none"),
    *(_f("event_address", c, k, "delete") for c, k in (
        ("id", "none"), ("event_id", "none"), ("address", "identifier"), ("contact_id", "pseudonym"))),
    # inbound_item: the received message itself
    _f("inbound_item", "id", "none"),
    _f("inbound_item", "raw", "raw", "blank", retain=("raw_mail",)),
    _f("inbound_item", "mail_from", "identifier", "null", retain=("raw_mail",)),
    _f("inbound_item", "rcpt_tos", "identifier", "blank"),
    _f("inbound_item", "source", "none"),
    _f("inbound_item", "received_at", "none"),
    _f("inbound_item", "status", "none"),
    _f("inbound_item", "attempts", "none"),
    _f("inbound_item", "last_error", "content", "null", retain=("raw_mail",)),
    _f("inbound_item", "available_at", "none"),
    _f("inbound_item", "updated_at", "none"),
    _f("inbound_item", "claimed_by", "none"),
    _f("inbound_item", "crashed", "none"),
    # outbox: updates about the contact; the address in their payloads is replaced by its hash
    _f("outbox", "id", "none"),
    _f("outbox", "event_id", "none"),
    _f("outbox", "contact_id", "pseudonym"),
    _f("outbox", "sequence", "none"),
    _f("outbox", "routing_key", "none"),
    _f("outbox", "payload", "content", "redact"),
    _f("outbox", "created_at", "none"),
    _f("outbox", "published_at", "none"),
    _f("outbox", "claimed_until", "none"),
    # soft_bounce: counted temporary failures of the address
    *(_f("soft_bounce", c, k, "delete") for c, k in (
        ("id", "none"), ("address", "identifier"), ("ref", "none"), ("status", "none"), ("reason", "none"),
        ("event_id", "none"), ("occurred_at", "none"), ("cleared_at", "none"))),
    # review_item: the item stays (it was work), the person goes; an open one is closed as erased
    _f("review_item", "id", "none"),
    _f("review_item", "event_id", "none"),
    _f("review_item", "kind", "none"),
    _f("review_item", "reason", "content", "scrub"),
    _f("review_item", "address", "identifier", "null"),
    _f("review_item", "created_at", "none"),
    _f("review_item", "due_at", "none"),
    _f("review_item", "resolved_at", "none"),
    _f("review_item", "resolution", "none"),
    _f("review_item", "resolution_event_id", "none"),
    # tombstone: what erasure leaves; the digest is a keyed hash, not the address
    _f("tombstone", "id", "none"),
    _f("tombstone", "digest", "consent", note="HMAC of the address: blocks it, cannot be reversed without the key"),
    _f("tombstone", "key_id", "none"),
    _f("tombstone", "optouts", "consent"),
    _f("tombstone", "suppression", "consent"),
    _f("tombstone", "event_id", "none"),
    _f("tombstone", "erased_at", "none"),
    # console_user and console_session: staff accounts of the operator console, not data subjects
    *(_f("console_user", c, "none", note="staff account") for c in (
        "id", "name", "password_hash", "role", "disabled", "failed_logins", "locked_until", "created_at",
        "updated_at", "last_sign_in_at")),
    *(_f("console_session", c, "none", note="staff session") for c in (
        "id", "user_id", "csrf_secret", "created_at", "last_seen_at", "expires_at")),
    # sent_count: how many messages a unit sent on a day; about no one
    *(_f("sent_count", c, "none") for c in ("id", "day", "unit", "channel", "count", "reported_by", "updated_at")),
)

BY_COLUMN: dict[tuple[str, str], Field] = {(f.table, f.column): f for f in FIELDS}


def personal_fields() -> list[Field]:
    """Every column that holds data about a person (kind other than `none`)."""
    return [f for f in FIELDS if f.personal]


def retention_rules() -> set[tuple[str, str, str]]:
    """(table, column, class) for every column a retention class other than `contacts` changes
    (`contacts` erases, by `erasure_rules`)."""
    return {(f.table, f.column, cls) for f in FIELDS for cls in f.retain}


def erasure_rules() -> set[tuple[str, str, str]]:
    """(table, column, rule) for every column erasure changes."""
    return {(f.table, f.column, f.erase) for f in FIELDS if f.erase != "keep"}
