"""Retention (issue 23, item 5): which records are past their period, and the commands that
remove them. Pure: the worker reads the candidates (worker.ops.retention), these functions
decide, and handlers.state.apply writes each batch as one event of kind admin, source
`retention`, operator `retention`.

The classes, in the order a run takes them (settings `[retention]`, config.periods):

    contacts      a contact whose last interaction is older than the period of its kind is
                  erased exactly as `unsubd contacts erase` erases (handlers.events.rights):
                  its addresses live on only as tombstones that keep its "no"s, and a
                  `contact.erased` update (reason `retention`) tells marketing systems.
    review_items  a resolved review item is deleted once its resolution is older than the period.
    events        an event older than the period that no row refers to is deleted (with its
                  event_address rows). One that a preference, membership, suppression, soft
                  bounce, outbox row, tombstone or review item refers to is the record of
                  something still in effect or still published: it stays, emptied (its reason
                  and evidence replaced by the marker, as the evidence class does).
    evidence      the free text of an event (reason and evidence) older than the period is
                  replaced by the marker; the row (what happened, when, its actions) stays.
    raw_mail      a handled received message (done, or parked as failed) older than the period
                  keeps its row, without its bytes, envelope sender and error text.

A contact's **kind**: `alumni` when it is on one of `retention.alumni_units` (a membership,
which only an import gives), `non_alumni` otherwise. Its **last interaction** is the latest of:
its creation, any event that concerns it or one of its addresses (an emailed request, a
bounce, a click, a page save, an import listing it, an operator's action), a change of one
of its preferences, and its joining a unit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from config.periods import Period, parse_period
from config.settings import RetentionSettings
from handlers.events.rights import active_digest
from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.plan import RETENTION_RULES
from handlers.tokens import Keyring

CLASSES = ("contacts", "review_items", "events", "evidence", "raw_mail")
OPERATOR = "retention"
MARKER = "[removed after its retention period]"
# What each class does to which table: handlers.state.plan.RETENTION_RULES.


@dataclass(frozen=True)
class Policy:
    """The periods of `[retention]`, parsed: None means keep."""

    raw_mail: Period | None
    evidence: Period | None
    events: Period | None
    review_items: Period | None
    alumni: Period | None
    non_alumni: Period | None
    alumni_units: frozenset[str]

    @classmethod
    def from_settings(cls, r: RetentionSettings) -> Policy:
        """From the `[retention]` settings (already validated)."""
        return cls(raw_mail=parse_period(r.raw_mail), evidence=parse_period(r.evidence),
                   events=parse_period(r.events), review_items=parse_period(r.review_items),
                   alumni=parse_period(r.contacts.alumni), non_alumni=parse_period(r.contacts.non_alumni),
                   alumni_units=frozenset(r.alumni_units))

    def cutoff(self, name: str, now: datetime) -> datetime | None:
        """Records of class `name` (or contact kind `alumni`/`non_alumni`) from before this are due; None: kept."""
        period: Period | None = getattr(self, name)
        return period.before(now) if period is not None else None

    def describe(self, name: str) -> str:
        period: Period | None = getattr(self, name)
        return period.text if period is not None else "keep"


@dataclass(frozen=True)
class ContactSeen:
    """A contact as the worker read it: when it last interacted, and the units it is on."""

    contact_id: int
    last_interaction: datetime
    units: frozenset[str]


def kind_of(contact: ContactSeen, policy: Policy) -> str:
    """`alumni` when the contact is on one of the alumni units, else `non_alumni`."""
    return "alumni" if contact.units & policy.alumni_units else "non_alumni"


def due_contacts(contacts: Iterable[ContactSeen], policy: Policy, now: datetime) -> list[int]:
    """The ids of the contacts whose last interaction is before their kind's cut-off, in id order.

    A kind kept (`keep`) is never due; a last interaction in the future (a clock that was
    wrong) is not due either.
    """
    cutoffs = {kind: policy.cutoff(kind, now) for kind in ("alumni", "non_alumni")}
    due = []
    for c in contacts:
        cutoff = cutoffs[kind_of(c, policy)]
        if cutoff is not None and c.last_interaction < cutoff:
            due.append(c.contact_id)
    return sorted(due)


def event_fates(old: Iterable[tuple[str, bool]]) -> tuple[list[str], list[str]]:
    """Events older than the events period, each with whether a row refers to it, split into
    (to delete, to empty): an event something still refers to is never deleted."""
    delete, empty = [], []
    for event_id, referenced in old:
        (empty if referenced else delete).append(event_id)
    return delete, empty


def batches(items: Sequence[object], size: int) -> list[Sequence[object]]:
    """`items` in slices of at most `size` (one transaction each)."""
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def erase_contacts(addresses: Sequence[str], contacts: int, period: str, keyring: Keyring) -> Decision:
    """The command that erases the addresses (normalised; every address of `contacts` contacts
    past their period), keeping their "no"s as tombstones, as handlers.events.rights.erase does.

    Raises ValueError for no address. The addresses appear in no reason or evidence; the
    event's actions are stored with them taken out.
    """
    if not addresses:
        raise ValueError("nothing to erase: no address")
    actions = tuple(Action(ActionType.ERASE, a, reason=OPERATOR, ref=":".join(active_digest(keyring, a)))
                    for a in dict.fromkeys(addresses))
    return Decision(item_id=f"retention:{uuid.uuid4()}", kind=Kind.ADMIN, source=OPERATOR, verified=True,
                    operator=OPERATOR, actions=actions,
                    reason=f"retention: {contacts} contact(s) past their period ({period}) erased; "
                           "their opt-outs are kept as tombstones",
                    evidence={"retention": {"class": "contacts", "contacts": contacts, "period": period},
                              "tombstones": [dict(zip(("key_id", "digest"), a.ref.split(":", 1)))
                                             for a in actions if a.ref]})


def remove_rows(name: str, period: str, delete: Sequence[object] = (), empty: Sequence[object] = (),
                blank: Sequence[object] = ()) -> Decision:
    """The command for one batch of class `name` (not contacts): the row ids to delete, to
    empty (events: reason and evidence become the marker) or to blank (raw mail).

    Raises ValueError for an unknown class or a rule the class does not have. The ids are
    kept in the event's evidence (ids only: they name nobody), which is what
    handlers.state.plan reads (`plan_retention`).
    """
    given = {rule: [int(i) if name == "review_items" else str(i) for i in ids]   # type: ignore[call-overload]
             for rule, ids in (("delete", delete), ("empty", empty), ("blank", blank)) if ids}
    allowed = {rule for cls, _, rule in RETENTION_RULES if cls == name}
    if name not in CLASSES or name == "contacts" or not set(given) <= allowed:
        raise ValueError(f"retention class {name!r} cannot {', '.join(sorted(set(given) - allowed)) or 'do that'}")
    counts = ", ".join(f"{len(ids)} {rule}" for rule, ids in given.items())
    return Decision(item_id=f"retention:{uuid.uuid4()}", kind=Kind.ADMIN, source=OPERATOR, verified=True,
                    operator=OPERATOR, actions=(), reason=f"retention of {name} ({period}): {counts}",
                    evidence={"retention": {"class": name, "period": period, **given}})
