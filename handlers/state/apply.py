"""The one place a decision is written: event + state rows + outbox rows, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Mapping, Protocol

from handlers.model import ActionType, Decision, Kind
from handlers.state.plan import (BouncePolicy, CurrentState, OnUnsubscribe, Plan, Profile, ReviewState,
                                 addresses_of, hold_unverified, plan)


class UnitOfWork(Protocol):
    """One database transaction. `async with uow:` begins; leaving without commit rolls back.

    Implemented with SQLAlchemy in worker/store/db.py; any implementation must make
    `record` + `commit` atomic and make `read_ahead` see committed events of every
    process (the dedupe check: it returns the item ids that already have an event).

    An implementation may carry `on_unsubscribe` (handlers.state.plan.OnUnsubscribe): the
    units whose email opt-out erases the address; without it, nothing is erased on opt-out.

    `read_ahead` also gets a hint: the addresses the transaction's coming `load_state`
    calls will ask about, so an implementation may read them in the same round trip.
    Whatever it does, `load_state` must return the state as this transaction sees it
    then, including what earlier `record` calls wrote.
    """

    async def __aenter__(self) -> UnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def read_ahead(self, item_ids: list[str], addresses: list[str], soft_since: datetime) -> set[str]: ...
    async def load_state(self, addresses: list[str], soft_since: datetime) -> CurrentState: ...
    async def contact_addresses(self, contact_ids: list[int]) -> dict[int, str]: ...
    async def contacts_by_recipient_id(self, recipient_ids: list[str]) -> dict[str, int]: ...
    async def recent_unverified_optouts(self, since: datetime) -> int: ...
    async def profiles(self, addresses: list[str]) -> dict[str, Profile]: ...
    async def review_state(self, review_id: int) -> ReviewState | None: ...
    async def record(self, decision: Decision, event_id: str, changes: Plan, now: datetime) -> None: ...
    async def commit(self) -> None: ...


class Refused(ValueError):
    """A command that cannot be written at all (`Plan.refused`): nothing was written.

    Only commands refuse (an import naming another contact's recipient id, a review
    item already settled); what arrives by mail or queue is never refused.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Applied:
    item_id: str
    event_id: str | None
    duplicate: bool
    updates: int
    counts: Mapping[str, int] = field(default_factory=dict)   # the plan's summary (an import's created, ...)
    dropped: tuple[str, ...] = ()                               # actions the consent rules did not allow

    @classmethod
    def dup(cls, item_id: str) -> Applied:
        return cls(item_id=item_id, event_id=None, duplicate=True, updates=0)


async def _resolve_contacts(decision: Decision, uow: UnitOfWork) -> Decision:
    """Give actions that name a contact (from a signed token, or by the sending system's
    recipient id) that contact's email address.

    An action whose contact no longer exists (anonymised, never imported) is dropped:
    the event still records the request, and nothing else can be acted on.
    """
    # A JOIN's recipient id is what the import gives the contact, not a way to find one.
    rids = sorted({a.recipient_id for a in decision.actions
                   if a.recipient_id and a.contact_id is None and a.type is not ActionType.JOIN})
    if rids:
        # The contact with that recipient id wins over the action's own address (a guess
        # from a rewritable header); with no such contact the address stands, if any.
        by_rid = await uow.contacts_by_recipient_id(rids)
        decision = replace(decision, actions=tuple(
            replace(a, contact_id=by_rid[a.recipient_id])
            if a.type is not ActionType.JOIN and a.recipient_id in by_rid and a.contact_id is None else a
            for a in decision.actions
            if a.type is ActionType.JOIN
            or not (a.recipient_id and a.contact_id is None and not a.address and a.recipient_id not in by_rid)))
    ids = sorted({a.contact_id for a in decision.actions if a.contact_id is not None})
    if not ids:
        return decision
    found = await uow.contact_addresses(ids)
    actions = tuple(a if a.contact_id is None else replace(a, address=found[a.contact_id])
                    for a in decision.actions if a.contact_id is None or a.contact_id in found)
    return replace(decision, actions=actions)


async def apply(decision: Decision, uow: UnitOfWork, now: datetime,
                policy: BouncePolicy = BouncePolicy(), unverified_per_hour: int = 0) -> Applied:
    """Write `decision` once. A decision whose item was already applied changes nothing.

    `policy` is the soft-bounce policy (see handlers.state.plan.plan). With
    `unverified_per_hour` > 0, an unverified opt-out beyond that many in the last hour
    is held for review instead (handlers.state.plan.hold_unverified).

    Raises only for infrastructure failures (the transaction is rolled back and the
    caller retries the whole unit of work); the decision itself is never rejected.
    """
    (applied,) = await apply_all([decision], uow, now, policy, unverified_per_hour)
    return applied


async def apply_all(decisions: list[Decision], uow: UnitOfWork, now: datetime,
                    policy: BouncePolicy = BouncePolicy(), unverified_per_hour: int = 0) -> list[Applied]:
    """Write several decisions, in order, in ONE transaction: all of them or none.

    Each is applied exactly as `apply` would, one after the other, so a later one sees
    what an earlier one wrote (sequence numbers, suppressions, a repeated item id,
    which is a duplicate). One commit for many decisions is what lets a busy consumer
    keep up: the commit (an fsync) is the expensive part. Raises like `apply`; the
    caller may then apply the decisions one by one to find the one that fails.
    """
    async with uow:
        seen = await uow.read_ahead(list({d.item_id for d in decisions}),
                                    addresses_of(a for d in decisions for a in d.actions if a.address),
                                    soft_since=now - policy.window)
        applied = []
        for d in decisions:
            if d.item_id in seen:
                applied.append(Applied.dup(d.item_id))
                continue
            seen.add(d.item_id)
            applied.append(await _apply_one(d, uow, now, policy, unverified_per_hour))
        await uow.commit()
    return applied


async def _apply_one(decision: Decision, uow: UnitOfWork, now: datetime, policy: BouncePolicy,
                     unverified_per_hour: int) -> Applied:
    event_id = str(uuid.uuid4())
    decision = await _resolve_contacts(decision, uow)
    if unverified_per_hour and decision.kind is Kind.OPTOUT and not decision.verified and decision.actions:
        recent = await uow.recent_unverified_optouts(now - timedelta(hours=1))
        decision = hold_unverified(decision, recent, unverified_per_hour)
    state = await uow.load_state(addresses_of(decision.actions), soft_since=now - policy.window)
    joins = [a for a in decision.actions if a.type is ActionType.JOIN]
    if joins:
        state.profiles = await uow.profiles(addresses_of(joins))
        rids = sorted({a.recipient_id for a in joins if a.recipient_id})
        state.recipient_ids = await uow.contacts_by_recipient_id(rids) if rids else {}
    settles = decision.evidence.get("settles_review") if isinstance(decision.evidence, Mapping) else None
    if isinstance(settles, Mapping):
        state.review = await uow.review_state(int(settles["id"]))
    # Units whose opt-out erases (config Unit.on_unsubscribe): the plan needs the memberships
    # of the addresses such an opt-out names (handlers.state.plan.OnUnsubscribe).
    on_unsubscribe: OnUnsubscribe | None = getattr(uow, "on_unsubscribe", None)
    erasing = [a for a in decision.actions if on_unsubscribe is not None and on_unsubscribe.covers(a) and a.address]
    if erasing:
        state.profiles = {**state.profiles, **await uow.profiles(addresses_of(erasing))}
    changes = plan(decision, state, event_id, now, policy, on_unsubscribe=on_unsubscribe)
    if changes.refused:
        raise Refused(changes.refused)         # leaves `async with uow` uncommitted: rolled back
    await uow.record(decision, event_id, changes, now)
    return Applied(item_id=decision.item_id, event_id=event_id, duplicate=False, updates=len(changes.updates),
                   counts=dict(changes.counts), dropped=tuple(changes.dropped))
