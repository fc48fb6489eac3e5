"""From a decision and the current state to the changes to write: pure, no I/O.

The precedence rule (DESIGN.md): for (contact, unit, channel), among the preference
rows for (unit, channel), (unit, *), (*, channel) and (*, *), the most recently
changed one wins; with none, the contact is subscribed. A suppression beats consent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from handlers.model import ALL, WILDCARD, Action, ActionType, Decision, Kind, State

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


@dataclass
class CurrentState:
    """The state of every address a decision touches, read inside the transaction."""

    contacts: dict[str, ContactState] = field(default_factory=dict)   # by address
    suppressed: dict[str, str] = field(default_factory=dict)          # address -> active reason
    soft_bounces: dict[str, list[SoftBounceRow]] = field(default_factory=dict)  # open, within the window

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


@dataclass
class Plan:
    new_contacts: list[str] = field(default_factory=list)             # addresses needing a contact
    suppressions: list[SuppressionChange] = field(default_factory=list)
    preferences: list[PreferenceChange] = field(default_factory=list)
    soft_bounces: list[SoftBounceChange] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)                   # addresses whose soft bounces stop counting
    releases: list[str] = field(default_factory=list)                  # suppressions an operator lifts
    updates: list[Update] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.suppressions or self.preferences or self.soft_bounces or self.cleared or self.releases)


def effective_state(preferences: Mapping[tuple[str, str], PreferenceRow], unit: str, channel: str) -> State:
    """The consent state for (unit, channel) under the precedence rule.

    `unit` or `channel` may themselves be '*': then only rows at least that broad count,
    which is what deciding whether a wildcard row is still needed requires.
    """
    candidates = [(unit, channel), (unit, WILDCARD), (WILDCARD, channel), (WILDCARD, WILDCARD)]
    rows = [preferences[c] for c in dict.fromkeys(candidates) if c in preferences]
    if not rows:
        return State.SUBSCRIBED
    # Ties (same timestamp) go to the broader row, then to unsubscribed: the safe side.
    newest = max(rows, key=lambda r: (r.changed_at, r.unit == WILDCARD, r.channel == WILDCARD,
                                      r.state == State.UNSUBSCRIBED))
    return newest.state


def _scope(values: Any) -> tuple[str, ...]:
    return (WILDCARD,) if values == ALL else tuple(values)


def suppression_reason(decision: Decision, action: Action) -> str:
    if decision.kind is Kind.COMPLAINT:
        return "complaint"
    return "hard_bounce"


def plan(decision: Decision, state: CurrentState, event_id: str, now: datetime,
         policy: BouncePolicy = BouncePolicy()) -> Plan:
    """Turn a decision into the changes to write, given the current state.

    Idempotent: an action whose effect is already in place (address already
    suppressed, consent already in that state, a soft bounce already counted for
    the same message) plans nothing. A decision marked for review plans nothing: a
    person confirms first. Soft bounces are counted per address and bounced message;
    `policy.threshold` of them within `policy.window` suppress the address (reason
    soft_bounce_threshold). A consent action from the address, or a report that mail
    was delivered to it, shows it is alive and clears its count; an operator's
    release lifts a suppression and clears it too.
    """
    result = Plan()
    if decision.review:
        return result
    state = copy.deepcopy(state)    # planning updates sequences and rows as it goes; the caller's stay as read
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
    return result


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
    reason = action.reason or decision.kind.value
    contact = _ensure_contact(action.address, state, result)
    for unit in _scope(action.units):
        for channel in _scope(action.channels):
            if effective_state(contact.preferences, unit, channel) is target:
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
    return list(dict.fromkeys(a.address for a in actions))
