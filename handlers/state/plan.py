"""From a decision and the current state to the changes to write: pure, no I/O.

The precedence rule (DESIGN.md): for (contact, unit, channel), among the preference
rows for (unit, channel), (unit, *), (*, channel) and (*, *), the most recently
changed one wins; with none, the contact is subscribed. A suppression beats consent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from handlers.model import ALL, WILDCARD, Action, ActionType, Channel, Decision, Kind, State
from handlers.state.rules import may_subscribe
from handlers.replies.rights import item_reason
from handlers.events.rights import active_digest
from handlers.tokens import Keyring

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PreferenceRow:
    unit: str
    channel: str
    state: State
    changed_at: datetime


@dataclass
class ContactState:
    """What apply needs to know about one contact before planning."""

    contact_id: int | None                      # None: not known yet, plan creates it
    seq: int = 0
    preferences: dict[tuple[str, str], PreferenceRow] = field(default_factory=dict)


@dataclass(frozen=True)
class SoftBounceRow:
    ref: str
    occurred_at: datetime


@dataclass(frozen=True)
class BouncePolicy:
    """`threshold` soft bounces within `window`, with no sign of life since, suppress."""

    threshold: int = 3
    window: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class Profile:
    """What an import may change about a contact: name, the sending system's id, its units."""

    name: str | None = None
    recipient_id: str | None = None
    units: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReviewState:
    """A review item an operator's decision settles, as read inside the transaction."""

    review_id: int
    resolved: str | None               # its resolution, None while open


@dataclass(frozen=True)
class TombstoneRow:
    """An erased address's tombstone, found by its keyed hash (handlers.events.rights)."""

    key_id: str
    digest: str
    optouts: tuple[tuple[str, str], ...]      # (unit, channel) opt-outs it keeps; (*, *) among them
    suppression: str | None                   # the reason of the suppression it had
    erased_at: datetime


@dataclass
class CurrentState:
    """The state of every address a decision touches, read inside the transaction."""

    contacts: dict[str, ContactState] = field(default_factory=dict)   # by address
    suppressed: dict[str, str] = field(default_factory=dict)          # address -> active reason
    soft_bounces: dict[str, list[SoftBounceRow]] = field(default_factory=dict)  # open, within the window
    # Read only for decisions that need them (JOIN actions; a review settled):
    profiles: dict[str, Profile] = field(default_factory=dict)        # by address, for known contacts
    recipient_ids: dict[str, int] = field(default_factory=dict)       # recipient id -> the contact holding it
    review: ReviewState | None = None
    # Addresses with no contact that were erased: their tombstones (read by load_state).
    tombstones: dict[str, TombstoneRow] = field(default_factory=dict)

    def contact_for(self, address: str) -> ContactState:
        return self.contacts.setdefault(address, ContactState(contact_id=None))


@dataclass(frozen=True)
class SuppressionChange:
    address: str
    reason: str


@dataclass(frozen=True)
class PreferenceChange:
    address: str
    unit: str
    channel: str
    state: State
    reason: str
    at: datetime | None = None          # the row's time when not the decision's (a tombstone's opt-out)


@dataclass(frozen=True)
class Update:
    """One message for marketing systems; contact_id is filled in when written."""

    address: str
    routing_key: str
    sequence: int
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class SoftBounceChange:
    address: str
    ref: str
    status: str | None
    reason: str | None


@dataclass(frozen=True)
class MembershipChange:
    address: str
    unit: str


@dataclass(frozen=True)
class ProfileChange:
    address: str
    name: str | None
    recipient_id: str | None


@dataclass(frozen=True)
class ReviewOpened:
    kind: str                          # decision, rights_request
    due_at: datetime | None
    address: str | None
    reason: str | None = None          # the item's own reason (a rights item names its type); else the decision's


@dataclass(frozen=True)
class Erasure:
    """An address to forget (worker.store.erasure does it), and the tombstone that replaces it."""

    address: str
    contact_id: int | None
    key_id: str
    digest: str
    optouts: tuple[tuple[str, str], ...]
    suppression: str | None


# Retention (issue 23): what a retention command (handlers.events.retention, source `retention`)
# does to rows that are not a contact's state: (class, table, rule). worker.store.retention
# carries them out; the row ids travel in the command's evidence, ids only.
RETENTION_RULES = (("review_items", "review_item", "delete"), ("events", "event", "delete"),
                   ("events", "event", "empty"), ("evidence", "event", "empty"),
                   ("raw_mail", "inbound_item", "blank"))


@dataclass(frozen=True)
class RowRetention:
    """Rows of `table` to `rule` (delete, empty, blank) because their retention period is over."""

    table: str
    rule: str
    ids: tuple[str | int, ...]


def plan_retention(decision: Decision) -> list[RowRetention]:
    """The row changes a retention command asks for; [] for any other decision. Only a
    verified admin decision from source `retention` counts, so that no inbound item can
    ask for a deletion through its evidence."""
    if decision.kind is not Kind.ADMIN or decision.source != "retention" or not decision.verified:
        return []
    ret = decision.evidence.get("retention") if isinstance(decision.evidence, Mapping) else None
    if not isinstance(ret, Mapping):
        return []
    out = []
    for cls, table, rule in RETENTION_RULES:
        ids = ret.get(rule)
        if ret.get("class") == cls and isinstance(ids, list) and ids:
            out.append(RowRetention(table, rule, tuple(ids)))
    return out


@dataclass(frozen=True)
class AddressChange:
    """A contact's address corrected (rectification): worker.store.rectify rewrites its address row."""

    contact_id: int
    old: str
    new: str


@dataclass
class Plan:
    new_contacts: list[str] = field(default_factory=list)             # addresses needing a contact
    suppressions: list[SuppressionChange] = field(default_factory=list)
    preferences: list[PreferenceChange] = field(default_factory=list)
    soft_bounces: list[SoftBounceChange] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)                   # addresses whose soft bounces stop counting
    releases: list[str] = field(default_factory=list)                  # suppressions an operator lifts
    memberships: list[MembershipChange] = field(default_factory=list)  # units a contact joins (import)
    leaves: list[MembershipChange] = field(default_factory=list)       # units' lists a contact leaves (on_unsubscribe)
    profiles: list[ProfileChange] = field(default_factory=list)        # name / recipient id set (import)
    reviews: list[ReviewOpened] = field(default_factory=list)          # review items the decision opens
    erasures: list[Erasure] = field(default_factory=list)              # addresses forgotten (tombstones)
    address_changes: list[AddressChange] = field(default_factory=list)  # addresses corrected (rectification)
    retention: list[RowRetention] = field(default_factory=list)        # rows past their retention period
    settles: tuple[int, str] | None = None                             # (review id, resolution) it closes
    updates: list[Update] = field(default_factory=list)
    # Why the decision cannot be written at all (an import naming a recipient id that
    # belongs to another contact, a review item already settled): apply writes nothing.
    refused: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)               # for the command's summary
    dropped: list[str] = field(default_factory=list)                   # actions the rules did not allow, and why
    # contact id -> its `contact.erased` update in `updates`: a contact's other addresses join
    # that update (one lookup each, however many contacts a retention batch erases).
    erased_updates: dict[int, Update] = field(default_factory=dict, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        return not (self.suppressions or self.preferences or self.soft_bounces or self.cleared or self.releases
                    or self.memberships or self.leaves or self.profiles or self.erasures or self.address_changes
                    or self.retention)


def effective_state(preferences: Mapping[tuple[str, str], PreferenceRow], unit: str, channel: str) -> State:
    """The consent state for (unit, channel) under the precedence rule.

    `unit` or `channel` may themselves be '*': then only rows at least that broad count,
    which is what deciding whether a wildcard row is still needed requires.
    """
    candidates = [(unit, channel), (unit, WILDCARD), (WILDCARD, channel), (WILDCARD, WILDCARD)]
    rows = [preferences[c] for c in dict.fromkeys(candidates) if c in preferences]
    if not rows:
        return State.SUBSCRIBED
    # Ties (rows of one moment, e.g. one page save that lifts "Stop all" and keeps some
    # boxes unticked) go to unsubscribed, the safe side, then to the broader row.
    newest = max(rows, key=lambda r: (r.changed_at, r.state == State.UNSUBSCRIBED, r.unit == WILDCARD,
                                      r.channel == WILDCARD))
    return newest.state


def _scope(values: Any) -> tuple[str, ...]:
    return (WILDCARD,) if values == ALL else tuple(values)


def suppression_reason(decision: Decision, action: Action) -> str:
    if decision.kind is Kind.COMPLAINT:
        return "complaint"
    return "hard_bounce"


def plan(decision: Decision, state: CurrentState, event_id: str, now: datetime,
         policy: BouncePolicy = BouncePolicy(), on_unsubscribe: OnUnsubscribe | None = None) -> Plan:
    """Turn a decision into the changes to write, given the current state.

    Idempotent: an action whose effect is already in place (address already
    suppressed, consent already in that state, a soft bounce already counted for
    the same message) plans nothing. A decision marked for review plans nothing: a
    person confirms first. Soft bounces are counted per address and bounced message;
    `policy.threshold` of them within `policy.window` suppress the address (reason
    soft_bounce_threshold). A consent action from the address, or a report that mail
    was delivered to it, shows it is alive and clears its count; an operator's
    release lifts a suppression and clears it too. With `on_unsubscribe`, an opt-out of the
    email of a unit set to "erase" also erases the address (see OnUnsubscribe).
    """
    result = Plan(reviews=review_items(decision))
    settles = decision.evidence.get("settles_review") if isinstance(decision.evidence, Mapping) else None
    if isinstance(settles, Mapping):
        review_id, resolution = int(settles["id"]), str(settles["resolution"])
        if state.review is None or state.review.review_id != review_id:
            result.refused.append(f"no review item {review_id}")
        elif state.review.resolved is not None:
            result.refused.append(f"review item {review_id} was already resolved as {state.review.resolved}")
        result.settles = (review_id, resolution)
        if result.refused:
            return result
    if decision.review:
        return result
    state = copy.deepcopy(state)    # planning updates sequences and rows as it goes; the caller's stay as read
    _apply_tombstones(state)
    for action in decision.actions:
        if action.type is ActionType.SUPPRESS:
            _suppress(decision, action.address, suppression_reason(decision, action), state, event_id, now, result)
        elif action.type is ActionType.SOFT_BOUNCE:
            _plan_soft_bounce(decision, action, state, event_id, now, policy, result)
        elif action.type in (ActionType.UNSUBSCRIBE, ActionType.SUBSCRIBE):
            _plan_consent(decision, action, state, event_id, now, result)
            _clear(action.address, state, result)
        elif action.type is ActionType.RELEASE:
            _plan_release(decision, action, state, event_id, now, result)
        elif action.type is ActionType.DELIVERED:
            _clear(action.address, state, result)
        elif action.type is ActionType.JOIN:
            _plan_join(decision, action, state, event_id, now, result)
        elif action.type is ActionType.ERASE:
            _plan_erase(decision, action, state, event_id, now, result)
        elif action.type is ActionType.CHANGE_ADDRESS:
            _plan_change_address(decision, action, state, event_id, now, result)
    if on_unsubscribe is not None:
        _erase_on_unsubscribe(decision, state, event_id, now, on_unsubscribe, result)
    _restore_tombstones(decision, state, event_id, now, result)
    result.retention = plan_retention(decision)
    return result


def _apply_tombstones(state: CurrentState) -> None:
    """An erased address with no contact still says "no": its tombstone's opt-outs (at the time
    of the erasure) and suppression are its state, so that what comes next is planned on them."""
    for address, tomb in state.tombstones.items():
        contact = state.contact_for(address)
        if contact.contact_id is not None:
            continue
        for unit, channel in tomb.optouts:
            contact.preferences.setdefault((unit, channel),
                                           PreferenceRow(unit, channel, State.UNSUBSCRIBED, tomb.erased_at))
        if tomb.suppression and address not in state.suppressed:
            state.suppressed[address] = tomb.suppression


def _restore_tombstones(decision: Decision, state: CurrentState, event_id: str, now: datetime,
                        result: Plan) -> None:
    """An erased address that comes back gets a contact again: its tombstone's opt-outs and
    suppression are written for it (and published), so that nothing starts mailing it.

    The tombstone stays: erasing the address again finds it.
    """
    for address in list(result.new_contacts):
        tomb = state.tombstones.get(address)
        if tomb is None or any(e.address == address for e in result.erasures):
            continue
        contact = state.contact_for(address)
        for unit, channel in tomb.optouts:
            if any(p.address == address and (p.unit, p.channel) == (unit, channel) for p in result.preferences):
                continue      # this decision wrote that scope itself, and its row is newer
            seq = _next_sequence(contact)
            result.preferences.append(PreferenceChange(address, unit, channel, State.UNSUBSCRIBED, "erased",
                                                       at=tomb.erased_at))
            payload = _payload(decision, event_id, address, unit, channel, State.UNSUBSCRIBED, "erased", seq, now)
            key = f"preference.{'all' if unit == WILDCARD else unit}.{'all' if channel == WILDCARD else channel}"
            result.updates.append(Update(address=address, routing_key=key, sequence=seq, payload=payload))
        if tomb.suppression and not any(s.address == address for s in result.suppressions):
            seq = _next_sequence(contact)
            result.suppressions.append(SuppressionChange(address=address, reason=tomb.suppression))
            payload = _payload(decision, event_id, address, None, "email", State.SUPPRESSED, tomb.suppression,
                               seq, now)
            result.updates.append(Update(address=address, routing_key=f"suppression.{tomb.suppression}",
                                         sequence=seq, payload=payload))
        result.counts["tombstones_found"] = result.counts.get("tombstones_found", 0) + 1


def _plan_erase(decision: Decision, action: Action, state: CurrentState, event_id: str, now: datetime,
                result: Plan) -> None:
    """Forget `action.address`: a tombstone keeps its opt-outs, (*, *) always among them (an erased
    person is not mailed again), and its suppression; one `contact.erased` update, carrying the
    digest and never the address, tells marketing systems to erase it too (GDPR Art. 17 and 19).

    An address with no contact (never known, or erased already) plans the tombstone and no update.
    """
    key_id, _, digest = (action.ref or "").partition(":")
    if not key_id or not digest:
        result.refused.append("an erasure without a tombstone digest")
        return
    address = action.address
    contact = state.contacts.get(address)
    optouts = {(WILDCARD, WILDCARD)}
    if contact is not None:
        optouts |= {key for key, row in contact.preferences.items() if row.state is State.UNSUBSCRIBED}
    old = state.tombstones.get(address)
    if old is not None:
        optouts |= set(old.optouts)
    suppression = state.suppressed.get(address) or (old.suppression if old else None)
    contact_id = contact.contact_id if contact is not None else None
    result.erasures.append(Erasure(address, contact_id, key_id, digest, tuple(sorted(optouts)), suppression))
    if contact_id is None:
        result.counts["already_erased" if old is not None else "unknown"] = 1 + result.counts.get(
            "already_erased" if old is not None else "unknown", 0)
        return
    earlier = result.erased_updates.get(contact_id)
    if earlier is not None:
        earlier.payload["address_hashes"].append(digest)   # type: ignore[index]  # the contact's other address
        return
    result.counts["erased"] = result.counts.get("erased", 0) + 1
    seq = _next_sequence(contact)
    # The update's reason says why: "erasure" (the person asked), "retention" (its period ended).
    payload = _payload(decision, event_id, address, None, WILDCARD, State.ERASED, action.reason or "erasure", seq,
                       now)
    payload.update(address=None, address_hash=digest, address_hashes=[digest], key_id=key_id,
                   erased_contact=contact_id)
    update = Update(address=address, routing_key="contact.erased", sequence=seq, payload=payload)
    result.updates.append(update)
    result.erased_updates[contact_id] = update


# Why a change of address is refused: the first words of its `Plan.refused` entry, which
# worker.ops.rights reads to answer "not found" (exit 1, 404) or "conflict" (exit 2, 409).
OLD_UNKNOWN = "no contact has the old address"
NEW_TAKEN = "the new address belongs to another contact"
NEW_ERASED = "the new address was erased at the person's request"


def _plan_change_address(decision: Decision, action: Action, state: CurrentState, event_id: str, now: datetime,
                         result: Plan) -> None:
    """Move the contact of `action.address` to `action.new_address` (rectification, GDPR Art. 16).

    The contact keeps its preferences, memberships, events and sequence; one update,
    `contact.address_changed` with `old_address` and `new_address`, tells marketing systems.
    The old address's suppression and soft bounces stay with the old address: nothing of
    them is planned for the new one. Refused (nothing written) when the old address has no
    contact (never known, erased, or moved already), when the new one is another
    contact's, or when a tombstone says the new one was erased: an erased person's address
    is not given to someone again by an operator's hand.
    """
    old, new = action.address, action.new_address
    contact = state.contacts.get(old)
    if not new or new == old:
        result.refused.append("a change of address needs a new address that differs from the old one")
        return
    if contact is None or contact.contact_id is None:
        result.refused.append(f"{OLD_UNKNOWN}: nothing to change")
        return
    holder = state.contacts.get(new)
    if holder is not None and holder.contact_id is not None:
        result.refused.append(f"{NEW_TAKEN}" + (" (it is already this contact's)"
                                                if holder.contact_id == contact.contact_id else ""))
        return
    if new in state.tombstones:
        result.refused.append(f"{NEW_ERASED}; its opt-outs are kept as a tombstone and it cannot be given "
                              "to a contact by hand")
        return
    result.address_changes.append(AddressChange(contact.contact_id, old, new))
    counts = result.counts
    counts["changed"] = counts.get("changed", 0) + 1
    if old in state.suppressed:
        counts["suppression_left_with_old"] = counts.get("suppression_left_with_old", 0) + 1
    if state.soft_bounces.get(old):
        counts["soft_bounces_left_with_old"] = counts.get("soft_bounces_left_with_old", 0) + len(
            state.soft_bounces[old])
    seq = _next_sequence(contact)
    payload = _payload(decision, event_id, new, None, "email", State.ADDRESS_CHANGED, "address_changed", seq, now)
    payload.update(old_address=old, new_address=new)
    # Keyed by the old address: that is how the unit of work finds the contact it writes for.
    result.updates.append(Update(address=old, routing_key="contact.address_changed", sequence=seq, payload=payload))


@dataclass(frozen=True)
class OnUnsubscribe:
    """Units whose email opt-out also erases the address (config Unit.on_unsubscribe = "erase", issue 23
    item 7), and the keys its tombstone is made with (handlers.events.rights).

    The rule, for an opt-out of email that names such a unit (or all units, for a contact
    on such a unit's list):

    * a contact on no other unit's list (or on none) is erased as `unsubd contacts erase`
      does, in the same transaction as the opt-out: its tombstone keeps every opt-out,
      (*, *) among them, and `contact.erased` is published;
    * a contact also on another unit's list keeps its address, which the other units
      still need: the opt-out stands, and only the erasing units' memberships go;
    * an address unsubd has no contact for gets no contact: its opt-out lives on in the
      tombstone alone (a lookup finds it), and nothing is published about it;
    * without keys (`keyring` None) nothing is erased: the opt-out stands, and the plan
      counts `erase_without_keys`. An opt-out is never refused.

    The tombstone is made for the address the opt-out names; a contact holds one email
    address today (imports and `change-address` keep it so). Erasing a whole person
    with several is `unsubd contacts erase`, which makes one tombstone per address.
    """

    erase_units: frozenset[str] = frozenset()
    keyring: Keyring | None = None

    def covers(self, action: Action) -> bool:
        """Whether `action` is an opt-out of email that may concern an erasing unit."""
        return (action.type is ActionType.UNSUBSCRIBE and bool(self.erase_units)
                and (action.channels == ALL or bool({"email", WILDCARD} & set(action.channels)))
                and (action.units == ALL or bool(self.erase_units & set(action.units))))


def _erase_on_unsubscribe(decision: Decision, state: CurrentState, event_id: str, now: datetime,
                          on_unsubscribe: OnUnsubscribe, result: Plan) -> None:
    """Erase, or take off the erasing units' lists, the addresses of the decision's email opt-outs
    (see OnUnsubscribe). `state` is the planning copy, with the decision's opt-outs in it."""
    for action in decision.actions:
        address = action.address
        if not address or not on_unsubscribe.covers(action) or any(e.address == address for e in result.erasures):
            continue
        member_of = set(state.profiles.get(address, Profile()).units)
        units = set(on_unsubscribe.erase_units) & (member_of if action.units == ALL else set(action.units))
        if not units:
            continue
        if on_unsubscribe.keyring is None:
            result.counts["erase_without_keys"] = result.counts.get("erase_without_keys", 0) + 1
            continue
        if member_of - units:
            for unit in sorted(units & member_of):
                if MembershipChange(address, unit) not in result.leaves:
                    result.leaves.append(MembershipChange(address, unit))
            continue
        contact = state.contacts.get(address)
        if contact is not None and contact.contact_id is None:
            # Not known before this decision: no contact is made for it; the tombstone keeps the opt-out.
            result.new_contacts = [a for a in result.new_contacts if a != address]
            result.preferences = [p for p in result.preferences if p.address != address]
            result.updates = [u for u in result.updates if u.address != address]
        key_id, digest = active_digest(on_unsubscribe.keyring, address)
        _plan_erase(decision, Action(ActionType.ERASE, address, reason="erasure", ref=f"{key_id}:{digest}"),
                    state, event_id, now, result)
        result.counts["erased_on_unsubscribe"] = result.counts.get("erased_on_unsubscribe", 0) + 1


def review_items(decision: Decision) -> list[ReviewOpened]:
    """The review items a decision opens: one when it is for review, one per rights request.

    A rights request's deadline comes from its evidence (`rights_request.deadline`, an
    ISO date); one that does not parse opens the item without a deadline. A request of
    several types (`rights_request.types`) opens one item per type, each with a reason
    that names it (handlers.replies.rights.item_reason).
    """
    evidence = decision.evidence if isinstance(decision.evidence, Mapping) else {}
    address = next((a.address for a in decision.actions if a.address), None)
    if address is None and isinstance(evidence.get("from"), str) and "@" in evidence["from"]:
        address = evidence["from"]
    items: list[ReviewOpened] = []
    if decision.review:
        items.append(ReviewOpened("decision", None, address))
    rights = evidence.get("rights_request")
    if isinstance(rights, Mapping):
        due = None
        try:
            due = datetime.fromisoformat(str(rights.get("deadline"))).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
        # One item per type asked for (handlers.replies.rights), each saying its type.
        types = rights.get("types")
        types = [str(t) for t in types] if isinstance(types, list) and types else [str(rights.get("type"))]
        for kind in dict.fromkeys(types):
            items.append(ReviewOpened("rights_request", due, address,
                                      item_reason(kind, due.date().isoformat() if due else "not set", decision.reason)))
    return items


def _plan_join(decision: Decision, action: Action, state: CurrentState, event_id: str, now: datetime,
               result: Plan) -> None:
    """An import row: the contact exists, with its name and recipient id, and is on `action.units`.

    Membership never touches consent: an opt-out stands whatever the import says (DESIGN
    promise 6), and is counted as `kept_opt_out`. A recipient id held by another contact
    refuses the whole import.
    """
    address = action.address
    contact = state.contact_for(address)
    known = contact.contact_id is not None or address in result.new_contacts
    profile = state.profiles.get(address, Profile())
    counts = result.counts
    if action.recipient_id is not None:
        holder = state.recipient_ids.get(action.recipient_id)
        if holder is not None and holder != contact.contact_id:
            result.refused.append(f"recipient_id {action.recipient_id!r} belongs to another contact ({address})")
            return
    _ensure_contact(address, state, result)
    name = action.name if action.name and action.name != profile.name else None
    rid = action.recipient_id if action.recipient_id and action.recipient_id != profile.recipient_id else None
    changed = name is not None or rid is not None
    if changed:
        result.profiles.append(ProfileChange(address, name, rid))
        if rid is not None:
            state.recipient_ids[rid] = contact.contact_id if contact.contact_id is not None else -1
    units = action.units if action.units != ALL else ()
    for unit in units:
        if any(effective_state(contact.preferences, unit, channel.value) is State.UNSUBSCRIBED
               for channel in Channel):
            counts["kept_opt_out"] = counts.get("kept_opt_out", 0) + 1   # it stands: consent is apart
        if unit in profile.units:
            continue
        profile = replace(profile, units=profile.units | {unit})
        changed = True
        seq = _next_sequence(contact)
        result.memberships.append(MembershipChange(address, unit))
        payload = _payload(decision, event_id, address, unit, WILDCARD, State.JOINED, "import", seq, now)
        result.updates.append(Update(address=address, routing_key=f"membership.{unit}", sequence=seq,
                                     payload=payload))
    state.profiles[address] = profile
    outcome = "created" if not known else ("updated" if changed else "unchanged")
    counts[outcome] = counts.get(outcome, 0) + 1


def _ensure_contact(address: str, state: CurrentState, result: Plan) -> ContactState:
    contact = state.contact_for(address)
    if contact.contact_id is None and address not in result.new_contacts:
        result.new_contacts.append(address)
    return contact


def _next_sequence(contact: ContactState) -> int:
    contact.seq += 1
    return contact.seq


def _payload(decision: Decision, event_id: str, address: str, unit: str | None, channel: str,
             state: State, reason: str, sequence: int, now: datetime) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "contact_id": None,          # filled in when written
        "address": address,
        "unit": unit,
        "channel": channel,
        "state": state.value,
        "reason": reason,
        "source": decision.source if decision.kind is not Kind.BOUNCE else "bounce",
        **({"operator": decision.operator} if decision.operator else {}),
        "verified": decision.verified,
        "occurred_at": now.isoformat(),
        "sequence": sequence,
    }


def _suppress(decision: Decision, address: str, reason: str, state: CurrentState, event_id: str,
              now: datetime, result: Plan) -> None:
    if address in state.suppressed or any(s.address == address for s in result.suppressions):
        return
    contact = _ensure_contact(address, state, result)
    seq = _next_sequence(contact)
    result.suppressions.append(SuppressionChange(address=address, reason=reason))
    payload = _payload(decision, event_id, address, None, "email", State.SUPPRESSED, reason, seq, now)
    result.updates.append(Update(address=address, routing_key=f"suppression.{reason}", sequence=seq,
                                 payload=payload))


def _plan_soft_bounce(decision: Decision, action: Action, state: CurrentState, event_id: str, now: datetime,
                      policy: BouncePolicy, result: Plan) -> None:
    address = action.address
    if address in state.suppressed or any(s.address == address for s in result.suppressions):
        return
    ref = action.ref or f"event:{event_id}"
    counted = state.soft_bounces.setdefault(address, [])
    if any(row.ref == ref for row in counted):
        return                                  # the same message reported again: counts once
    counted.append(SoftBounceRow(ref, now))
    result.soft_bounces.append(SoftBounceChange(address, ref, action.status, action.reason))
    if len(counted) >= policy.threshold:
        _suppress(decision, address, "soft_bounce_threshold", state, event_id, now, result)


def _clear(address: str, state: CurrentState, result: Plan) -> None:
    if state.soft_bounces.get(address) and address not in result.cleared:
        state.soft_bounces[address] = []
        result.cleared.append(address)


def _plan_release(decision: Decision, action: Action, state: CurrentState, event_id: str, now: datetime,
                  result: Plan) -> None:
    address = action.address
    _clear(address, state, result)
    if address not in state.suppressed or address in result.releases:
        return
    del state.suppressed[address]
    result.releases.append(address)
    contact = _ensure_contact(address, state, result)
    seq = _next_sequence(contact)
    reason = action.reason or "released"
    payload = _payload(decision, event_id, address, None, "email", State.RELEASED, reason, seq, now)
    result.updates.append(Update(address=address, routing_key="suppression.released", sequence=seq,
                                 payload=payload))


def _plan_consent(decision: Decision, action: Action, state: CurrentState, event_id: str,
                  now: datetime, result: Plan) -> None:
    target = State.UNSUBSCRIBED if action.type is ActionType.UNSUBSCRIBE else State.SUBSCRIBED
    if target is State.SUBSCRIBED and (why := may_subscribe(decision)) is not None:
        result.dropped.append(f"subscribe {action.address}: {why}")
        return
    reason = action.reason or decision.kind.value
    contact = _ensure_contact(action.address, state, result)
    for unit in _scope(action.units):
        for channel in _scope(action.channels):
            if _in_effect(contact.preferences, unit, channel, target):
                continue    # already in effect: writing it again would publish a no-op update
            contact.preferences[(unit, channel)] = PreferenceRow(unit, channel, target, now)
            seq = _next_sequence(contact)
            result.preferences.append(PreferenceChange(action.address, unit, channel, target, reason))
            key_unit = "all" if unit == WILDCARD else unit
            key_channel = "all" if channel == WILDCARD else channel
            payload = _payload(decision, event_id, action.address, unit, channel, target, reason, seq, now)
            result.updates.append(Update(address=action.address,
                                         routing_key=f"preference.{key_unit}.{key_channel}",
                                         sequence=seq, payload=payload))


def _in_effect(preferences: Mapping[tuple[str, str], PreferenceRow], unit: str, channel: str,
               target: State) -> bool:
    """True when every cell that a (unit, channel) row covers is already in `target`.

    A wildcard row covers the cells of narrower rows too: an opt-in for (*, *) after an
    opt-out of (alumni, *) is not in effect, although no (*, *) row says otherwise. The
    cells worth asking about are the scope itself and every unit and channel the rows
    name beneath it; any other cell is decided by the same rows as the scope.
    """
    units = {unit} | ({u for u, _ in preferences} if unit == WILDCARD else set())
    channels = {channel} | ({c for _, c in preferences} if channel == WILDCARD else set())
    return all(effective_state(preferences, u, c) is target for u in units for c in channels)


def hold_unverified(decision: Decision, recent: int, limit: int) -> Decision:
    """Hold an unverified emailed opt-out for review once `recent` such opt-outs in the last
    hour reach `limit` (0: never): a guard against mass spoofing (issue 4, item 6).

    Verified decisions, decisions already for review and anything but OPTOUT pass
    unchanged. A held decision keeps its proposed actions in evidence for the reviewer.
    """
    if (limit <= 0 or recent < limit or decision.verified or decision.review
            or decision.kind is not Kind.OPTOUT or not decision.actions):
        return decision
    return replace(decision, actions=(), review=True,
                   reason=f"{decision.reason}; held for review: {recent} unverified opt-outs in the last hour "
                          f"(limit {limit})",
                   evidence={**decision.evidence, "held_actions": [a.to_json() for a in decision.actions]})


def addresses_of(actions: Iterable[Action]) -> list[str]:
    """The addresses the actions name (a change of address names its new address too), in order."""
    return list(dict.fromkeys(x for a in actions for x in (a.address, a.new_address) if x is not None))
