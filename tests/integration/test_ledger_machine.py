"""The whole ledger as a state machine: random sequences of every entry point against a
small reference model of the consent rules (handlers/state/rules.py), on SQLite and PostgreSQL.

The model is written apart from the code it checks: it keeps, for each address, one
state per (unit, channel) cell of the configured grid and assigns every cell an action
covers, in order, which is what "the most recently changed matching row wins" means.
After every step the machine checks that

* the effective state in the database equals the model's, cell by cell, and the
  suppressions and unit memberships equal the model's;
* nothing became `subscribed` without proof (the model only lets proven requests in);
* a step that changed something published updates, one that changed nothing published
  none, and each contact's `sequence` runs 1, 2, 3, ... without a gap or a repeat;
* replaying an item already applied changed nothing.

CI runs a bounded number of examples (`UNSUBD_LEDGER_EXAMPLES`, default 20 each);
`make proof` runs a long one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from handlers.state.apply import apply
from handlers.events import page
from handlers.model import ALL, Action, ActionType, Decision, Kind, State
from handlers.state.plan import BouncePolicy, PreferenceRow, effective_state
from worker.ops import admin
from worker.store import migrate
from worker.ops.contacts import import_rows, parse_csv
from worker.store.db import Database
from worker.ingress.links import load_preferences
from worker.store.models import Address, Membership, Outbox, Preference, ReviewItem, Suppression
from worker.ops.review import resolve
from tests.conftest import (PG_HOST, PG_PORT, _create_pg_database, _drop_pg_database, make_settings, port_open,
                            service_missing)

EXAMPLES = int(os.environ.get("UNSUBD_LEDGER_EXAMPLES", "20"))
STEPS = int(os.environ.get("UNSUBD_LEDGER_STEPS", "30"))
SETTINGS = make_settings()
UNITS = ("alumni", "events")            # a part of the configured units keeps the grid small
CHANNELS = ("email", "sms", "letter")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
POLICY = BouncePolicy()
_instances = itertools.count()

units_st = st.sampled_from([ALL, ("alumni",), ("events",), ("alumni", "events")])
channels_st = st.sampled_from([ALL, ("email",), ("sms",), ("email", "letter")])


def scoped(changed: bool, units: Any, channels: Any) -> bool | None:
    if changed:
        return True
    return False if units != ALL and channels != ALL and set(channels) <= set(CHANNELS) else None


class Model:
    """The reference: what the rules say the ledger holds for one address."""

    def __init__(self) -> None:
        self.cells = {(u, c): State.SUBSCRIBED for u in UNITS for c in CHANNELS}
        self.suppressed = False
        self.soft: set[str] = set()
        self.units: set[str] = set()
        self.known = False

    def assign(self, units: Any, channels: Any, state: State) -> bool:
        changed = False
        for u in (UNITS if units == ALL else units):
            for c in (CHANNELS if channels == ALL else channels):
                if (u, c) in self.cells and self.cells[u, c] is not state:
                    self.cells[u, c], changed = state, True
        return changed


def machine_for(db: Database, loop: asyncio.AbstractEventLoop) -> type[RuleBasedStateMachine]:
    class Ledger(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            n = next(_instances)
            self.addresses = [f"m{n}-{i}@example.se" for i in range(2)]
            self.model = {a: Model() for a in self.addresses}
            self.clock = T0 + timedelta(days=n)
            self.applied: list[Decision] = []
            self.reviews: dict[int, str] = {}
            self.published = 0
            self.ids = itertools.count()

        # -- helpers ----------------------------------------------------------------------

        def run(self, coro: Any) -> Any:
            return loop.run_until_complete(coro)

        def now(self) -> datetime:
            self.clock += timedelta(seconds=1)
            return self.clock

        def apply(self, decision: Decision) -> Any:
            applied = self.run(apply(decision, db.unit_of_work(), self.now(), POLICY))
            self.applied.append(decision)
            return applied

        def consent(self, address: str, units: Any, channels: Any, state: State) -> bool | None:
            """True when the model changed; False when it did not and the scope lies inside the
            model's grid; None when it did not but a broader row may still be written (an
            `all` scope reaches units and channels the grid leaves out)."""
            m = self.model[address]
            m.known = True
            m.soft.clear()                      # a consent action shows the address is alive
            return scoped(m.assign(units, channels, state), units, channels)

        def expect(self, changed: bool | None) -> None:
            self.expect_changed = changed

        # -- entry points -------------------------------------------------------------------

        @rule(i=st.integers(0, 1), units=st.lists(st.sampled_from(UNITS), unique=True, max_size=2),
              name=st.sampled_from(["", "Anna", "Bo"]))
        def import_contact(self, i: int, units: list[str], name: str) -> None:
            address = self.addresses[i]
            rows = parse_csv(f"address,name,units\n{address},{name},{';'.join(units)}\n", SETTINGS)
            self.run(import_rows(db, rows, self.now(), "machine.csv", operator="machine"))
            m = self.model[address]
            new = set(units) - m.units
            m.units |= new
            m.known = True
            self.expect(bool(new))

        @rule(i=st.integers(0, 1), units=units_st, channels=channels_st)
        def one_click(self, i: int, units: Any, channels: Any) -> None:
            address = self.addresses[i]
            unit = "*" if units == ALL else units[0]
            channel = "*" if channels == ALL else channels[0]
            self.apply(page.one_click(address, unit, channel, f"tok{next(self.ids)}-{address}", {}))
            self.expect(self.consent(address, (unit,) if unit != "*" else ALL,
                                     (channel,) if channel != "*" else ALL, State.UNSUBSCRIBED))

        @precondition(lambda self: any(m.known for m in self.model.values()))
        @rule(i=st.integers(0, 1), stop_all=st.booleans(), flips=st.sets(
            st.tuples(st.sampled_from(UNITS), st.sampled_from(CHANNELS)), max_size=3))
        def page_save(self, i: int, stop_all: bool, flips: set[tuple[str, str]]) -> None:
            """What the page does: render from the stored rows, the person flips boxes, saves."""
            address = self.addresses[i]
            if not self.model[address].known:
                return self.expect(False)
            contact_id = self.run(self.contact_id(address))
            prefs = self.run(load_preferences(db.sessions, contact_id))
            view = page.view(prefs.rows, list(UNITS), "*", "email", preselect=False)
            shown = [(u, c) for u in UNITS for c, _ in view.boxes[u] if c in CHANNELS]
            ticked = {(u, c) for u in UNITS for c, t in view.boxes[u] if t and c in CHANNELS}
            wanted = ticked ^ flips
            decision = page.save(address, prefs.rows, shown, wanted, stop_all, view.stop_all,
                                 token=f"tok{next(self.ids)}-{address}", proof=f"p{next(self.ids)}", evidence={})
            if decision is not None:
                self.apply(decision)
            m = self.model[address]
            before = dict(m.cells)
            if decision is not None:
                m.soft.clear()
            if stop_all:
                m.assign(ALL, ALL, State.UNSUBSCRIBED)
            else:
                for cell in shown:
                    m.cells[cell] = State.SUBSCRIBED if cell in wanted else State.UNSUBSCRIBED
            broad = decision is not None and (stop_all or view.stop_all)
            # "Stop all" and its undoing write (*, *), which reaches cells beyond the model's grid.
            self.expect(True if before != m.cells else (None if broad else False))

        @rule(i=st.integers(0, 1), units=units_st, channels=channels_st, verified=st.booleans())
        def emailed_opt_out(self, i: int, units: Any, channels: Any, verified: bool) -> None:
            address = self.addresses[i]
            self.apply(Decision(item_id=f"optout-{next(self.ids)}-{address}", kind=Kind.OPTOUT, verified=verified,
                                reason="emailed opt-out",
                                actions=(Action(ActionType.UNSUBSCRIBE, address, units=units, channels=channels),)))
            self.expect(self.consent(address, units, channels, State.UNSUBSCRIBED))

        @rule(i=st.integers(0, 1), units=units_st, channels=channels_st, verified=st.booleans())
        def emailed_opt_in(self, i: int, units: Any, channels: Any, verified: bool) -> None:
            address = self.addresses[i]
            self.apply(Decision(item_id=f"optin-{next(self.ids)}-{address}", kind=Kind.REPLY, verified=verified,
                                reason="emailed opt-in",
                                actions=(Action(ActionType.SUBSCRIBE, address, units=units, channels=channels),)))
            m = self.model[address]
            m.known = m.known or verified          # a dropped opt-in creates no contact
            m.soft.clear()
            self.expect(scoped(m.assign(units, channels, State.SUBSCRIBED), units, channels) if verified else False)

        @rule(i=st.integers(0, 1), units=units_st, channels=channels_st)
        def operator_opt_in(self, i: int, units: Any, channels: Any) -> None:
            address = self.addresses[i]
            self.run(admin.opt_in(db, address, units, channels, "asked by phone", self.now(), operator="eva"))
            self.expect(self.consent(address, units, channels, State.SUBSCRIBED))

        @rule(i=st.integers(0, 1))
        def hard_bounce(self, i: int) -> None:
            address = self.addresses[i]
            self.apply(Decision(item_id=f"hard-{next(self.ids)}-{address}", kind=Kind.BOUNCE, reason="5.1.1",
                                actions=(Action(ActionType.SUPPRESS, address, status="5.1.1", hard=True),)))
            m = self.model[address]
            m.known = True
            self.expect(not m.suppressed)
            m.suppressed = True

        @rule(i=st.integers(0, 1), ref=st.integers(0, 3))
        def soft_bounce(self, i: int, ref: int) -> None:
            address = self.addresses[i]
            self.apply(Decision(item_id=f"soft-{next(self.ids)}-{address}", kind=Kind.BOUNCE, reason="4.2.2",
                                actions=(Action(ActionType.SOFT_BOUNCE, address, status="4.2.2", hard=False,
                                                ref=f"<m{ref}@mail.example.org>"),)))
            m = self.model[address]
            if m.suppressed or f"r{ref}" in m.soft:
                return self.expect(False)
            m.soft.add(f"r{ref}")
            if len(m.soft) >= POLICY.threshold:
                m.known = True
                m.suppressed = True
                return self.expect(True)
            self.expect(None)                   # counted, not published: nothing to see for consumers

        @rule(i=st.integers(0, 1), unit=st.sampled_from(UNITS))
        def complaint(self, i: int, unit: str) -> None:
            address = self.addresses[i]
            self.apply(Decision(item_id=f"arf-{next(self.ids)}-{address}", kind=Kind.COMPLAINT, reason="abuse",
                                actions=(Action(ActionType.SUPPRESS, address),
                                         Action(ActionType.UNSUBSCRIBE, address, units=(unit,),
                                                channels=("email",)))))
            m = self.model[address]
            changed = not m.suppressed
            m.suppressed = True
            self.expect(bool(self.consent(address, (unit,), ("email",), State.UNSUBSCRIBED)) or changed)

        @rule(i=st.integers(0, 1))
        def release(self, i: int) -> None:
            address = self.addresses[i]
            self.run(admin.release(db, address, "mailbox fixed", self.now(), operator="eva"))
            m = self.model[address]
            m.soft.clear()
            self.expect(m.suppressed)
            m.suppressed = False

        @rule(i=st.integers(0, 1))
        def unclear_reply(self, i: int) -> None:
            address = self.addresses[i]
            d = Decision(item_id=f"unclear-{next(self.ids)}-{address}", kind=Kind.REPLY, review=True,
                         reason="unclear", evidence={"from": address})
            self.apply(d)
            item = self.run(self.newest_review())
            self.reviews[item] = address
            self.expect(False)

        @precondition(lambda self: bool(self.reviews))
        @rule(data=st.data(), optout=st.booleans())
        def settle_review(self, data: st.DataObject, optout: bool) -> None:
            review_id = data.draw(st.sampled_from(sorted(self.reviews)))
            address = self.reviews.pop(review_id)
            self.run(resolve(db, review_id, "optout" if optout else "ignore", self.now(), operator="eva"))
            self.expect(self.consent(address, ALL, ("email",), State.UNSUBSCRIBED) if optout else False)

        @precondition(lambda self: bool(self.applied))
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            decision = data.draw(st.sampled_from(self.applied))
            applied = self.run(apply(decision, db.unit_of_work(), self.now(), POLICY))
            assert applied.duplicate and applied.updates == 0
            self.expect(False)

        # -- checks -----------------------------------------------------------------------------

        async def contact_id(self, address: str) -> int | None:
            async with db.sessions() as s:
                return await s.scalar(select(Address.contact_id).where(Address.address == address))

        async def newest_review(self) -> int:
            async with db.sessions() as s:
                return await s.scalar(select(ReviewItem.id).order_by(ReviewItem.id.desc()).limit(1))

        async def stored(self, address: str) -> tuple[dict, bool, set[str], list[Outbox]]:
            async with db.sessions() as s:
                cid = await s.scalar(select(Address.contact_id).where(Address.address == address))
                sup = await s.scalar(select(Suppression.active).where(Suppression.address == address))
                if cid is None:
                    return {}, bool(sup), set(), []
                prefs = (await s.scalars(select(Preference).where(Preference.contact_id == cid))).all()
                units = set((await s.scalars(select(Membership.unit).where(Membership.contact_id == cid))).all())
                out = list((await s.scalars(select(Outbox).where(Outbox.contact_id == cid)
                                            .order_by(Outbox.sequence))).all())
            rows = {(p.unit, p.channel): PreferenceRow(p.unit, p.channel, State(p.state), p.changed_at)
                    for p in prefs}
            return rows, bool(sup), units, out

        @invariant()
        def ledger_matches_the_model(self) -> None:
            if not hasattr(self, "model"):
                return
            total = 0
            for address, m in self.model.items():
                rows, suppressed, units, out = self.run(self.stored(address))
                cells = {(u, c): effective_state(rows, u, c) for u in UNITS for c in CHANNELS}
                assert cells == m.cells, (address, cells, m.cells)
                assert suppressed == m.suppressed, address
                assert units == m.units, address
                assert [o.sequence for o in out] == list(range(1, len(out) + 1)), address
                for o in out:
                    if o.payload["state"] == "subscribed":      # only proof opts anyone back in
                        assert o.payload["source"] in ("page", "admin", "smtp", "queue") and (
                            o.payload["verified"] or o.payload.get("operator")), o.payload
                total += len(out)
            new = total - self.published
            expected = getattr(self, "expect_changed", False)
            if expected is not None:
                assert (new > 0) == expected, (new, expected)
            self.published = total
            self.expect_changed = False

    return Ledger


def _run(db_url: str, prepare: Any = None) -> None:
    loop = asyncio.new_event_loop()
    try:
        if prepare is not None:
            loop.run_until_complete(prepare())
        db = Database.connect(db_url)
        loop.run_until_complete(migrate.upgrade(db.engine))
        try:
            machine = machine_for(db, loop)
            # Shrinking replays against a real database and can take minutes: on only when asked
            # (UNSUBD_LEDGER_SHRINK=1), so a failure in CI reports its whole sequence at once.
            phases = list(Phase) if os.environ.get("UNSUBD_LEDGER_SHRINK") else [Phase.generate]
            machine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                                 suppress_health_check=list(HealthCheck), database=None,
                                                 phases=phases)
            machine.TestCase().runTest()
        finally:
            loop.run_until_complete(db.close())
    finally:
        loop.close()


def test_the_ledger_on_sqlite(tmp_path: Path) -> None:
    _run(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")


@pytest.mark.postgres
def test_the_ledger_on_postgresql() -> None:
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    loop = asyncio.new_event_loop()
    name = loop.run_until_complete(_create_pg_database())
    loop.close()
    try:
        _run(f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}")
    finally:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_drop_pg_database(name))
        loop.close()
