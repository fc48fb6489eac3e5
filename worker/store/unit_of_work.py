"""The unit of work that handlers.state.apply writes through (SqlUnitOfWork): a transaction's
lifecycle, the writes it holds and flushes (one statement per table, or on PostgreSQL one in
all), and how a decision's changes become rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol

from sqlalchemy import bindparam, delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.model import Decision
from handlers.state.plan import OnUnsubscribe, Plan
from handlers.events.rights import redact_actions, scrub, scrub_json
from worker.store.connection import WriteConn
from worker.store.models import Membership
from worker.store.erasure import BLANK_ITEMS, erase_rows
from worker.store.rectify import address_change_writes
from worker.store.retention import retain_rows
from worker.store.pg_flush import pg_insert_all, pg_json
from worker.store.reads import StateReads
from worker.store.statements import (ADDRESS_CONTACTS, CLEAR_SOFT, CONTACT_SEQ, INSERT_SLOTS, JOIN, NEW_CONTACT,
                                     PROFILE_NAME, PROFILE_RID, RELEASE, SETTLE, SQLITE_INSERTS, UPDATE_SLOTS)


class WriteAccess(Protocol):
    """What a unit of work needs of the Database it writes to (worker.store.database)."""

    dialect: str
    write_sessions: async_sessionmaker[AsyncSession]

    async def acquire_write(self) -> None: ...

    def release_write(self) -> None: ...

    def outbox_committed(self) -> None: ...


BeforeCommit = Callable[[WriteConn], Awaitable[None]]
# A contact leaves a unit's list (an opt-out of a unit whose on_unsubscribe is "erase", for a
# contact still on another unit's list: handlers.state.plan.OnUnsubscribe).
LEAVE = delete(Membership).where(Membership.contact_id == bindparam("b_contact"),
                                 Membership.unit == bindparam("b_unit"))


class SqlUnitOfWork(StateReads):
    """handlers.state.apply.UnitOfWork on SQLAlchemy: one connection, one transaction.

    Writes go through Core statements, not through ORM objects. They are held until
    the next read of the database or the commit, then made as one statement per table
    (executemany) for all the decisions recorded since: a batch of decisions whose
    state was read ahead (`read_ahead`) costs a few round trips in all, not a few
    per decision. Every read flushes what is held first, so a read sees every earlier
    `record` (two decisions that touch one address or contact are always separated
    by a read, since the second one's state cannot come from the read-ahead). On
    PostgreSQL the state read also reserves ids for the contacts a decision may create,
    and a flush is one statement for every table (worker.store.pg_flush).
    `before_commit` callbacks run inside the transaction just before
    COMMIT (the embedded queue marks its items done there, so "done" and the decision
    are one commit). When the transaction wrote outbox rows, the Database tells its
    listeners after the commit, and on PostgreSQL a NOTIFY tells other processes.

    Standalone (`Database.unit_of_work()`), it opens and commits its own transaction.
    Joined (`Database.unit_of_work(joined=conn)` inside `Database.write`), it runs in
    that transaction, and its `commit` only finishes the writing: the transaction
    commits when the `write` returns.
    """

    def __init__(self, db: WriteAccess, joined: WriteConn | None = None) -> None:
        self._db = db
        self._pg = db.dialect == "postgresql"
        self._joined = joined
        self._session: AsyncSession | None = None
        self._conn: WriteConn | None = joined
        self._committed = False
        self.before_commit: list[BeforeCommit] = []
        self._held: dict[str, list[Any]] = {}            # slot (INSERT_SLOTS, UPDATE_SLOTS) -> rows
        self._forget_reads()
        # Set by a consumer that publishes its own updates (worker.outbox.relay.Handoff): the
        # outbox rows written here are claimed until then, and collected in `claimed_rows`.
        self.claimed_until: datetime | None = None
        self.claimed_rows: list[dict[str, Any]] = []
        # What retention commands recorded here changed, per `<table>.<rule>` (worker.store.retention).
        self.retained: dict[str, int] = {}

    @property
    def on_unsubscribe(self) -> OnUnsubscribe | None:
        """The units whose email opt-out erases the address (set on the Database from the settings
        by worker.app.prepare_database), with the tombstone keys; None when there are none."""
        units = getattr(self._db, "erase_on_unsubscribe", None)
        if not units:
            return None
        return OnUnsubscribe(frozenset(units), getattr(self._db, "tombstone_keys", None))

    @property
    def conn(self) -> WriteConn:
        assert self._conn is not None, "use `async with uow:`"
        return self._conn

    async def __aenter__(self) -> SqlUnitOfWork:
        self._committed = False
        self._held = {slot: [] for slot in (*INSERT_SLOTS, *UPDATE_SLOTS)}
        self._forget_reads()
        if self._joined is not None:
            return self
        await self._db.acquire_write()
        try:
            self._session = self._db.write_sessions()
            await self._session.begin()
            self._conn = WriteConn(await self._session.connection(), self._db.dialect, blocking=False)
        except BaseException:
            if self._session is not None:
                await self._session.close()
                self._session = None
            self._db.release_write()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._joined is not None:
            return                            # Database.write commits or rolls back
        assert self._session is not None and self._conn is not None
        outbox_rows = self._conn.outbox_rows
        try:
            if not self._committed:
                await self._session.rollback()
        finally:
            await self._session.close()
            self._session = self._conn = None
            self._db.release_write()
        if self._committed and outbox_rows:
            self._db.outbox_committed()

    async def flush(self) -> None:
        """Make the writes held so far: the new rows (on PostgreSQL in one statement, on
        SQLite one executemany per table), then the updates."""
        conn, held = self.conn, self._held
        if self._db.dialect == "postgresql":
            filled = [slot for slot in (*INSERT_SLOTS, "contact_seq") if held[slot]]
            if filled:
                shape = tuple((slot, tuple(held[slot][0])) for slot in filled)
                await conn.execute(pg_insert_all(shape), {f"rows_{slot}": pg_json(held[slot]) for slot in filled})
        else:
            filled = [slot for slot in INSERT_SLOTS if held[slot]]
            for slot in filled:
                rows = held[slot]
                await conn.execute(SQLITE_INSERTS[slot], rows[0] if len(rows) == 1 else rows)
        for slot in filled:
            held[slot] = []
        updates, held["updates"] = held["updates"], []
        for statement, params in updates:
            await conn.execute(statement, params)
        seqs, held["contact_seq"] = held["contact_seq"], []
        if seqs:
            await conn.execute(CONTACT_SEQ, seqs[0] if len(seqs) == 1 else seqs)

    async def commit(self) -> None:
        conn = self.conn
        await self.flush()
        for callback in self.before_commit:
            await callback(conn)
        if self._session is not None:
            await self._session.commit()
        self._committed = True

    async def record(self, decision: Decision, event_id: str, changes: Plan, now: datetime) -> None:
        conn = self.conn
        erased = [e.address for e in changes.erasures]
        evidence = dict(decision.evidence)
        if erased:          # an opt-out that erases (on_unsubscribe): its own record keeps no address either
            evidence = scrub_json(evidence, erased)
        if decision.operator:
            evidence["operator"] = decision.operator
        if changes.dropped:
            evidence["dropped"] = list(changes.dropped)
        row = {"id": event_id, "item_id": decision.item_id, "kind": decision.kind.value, "source": decision.source,
               "reason": scrub(decision.reason, erased) if erased else decision.reason,
               "review": decision.review, "verified": decision.verified,
               "actions": redact_actions([a.to_json() for a in decision.actions], erased) if erased
               else [a.to_json() for a in decision.actions], "evidence": evidence,
               "occurred_at": now}
        held = self._held
        held["event"].append(row)
        held["review"].extend(
            {"event_id": event_id, "kind": r.kind, "reason": (r.reason or row["reason"])[:2000],
             "address": r.address, "created_at": now,
             "due_at": r.due_at, "resolved_at": None, "resolution": None, "resolution_event_id": None}
            for r in changes.reviews)
        if changes.settles is not None:
            held["updates"].append((SETTLE, {"b_id": changes.settles[0], "b_resolution": changes.settles[1],
                                             "b_now": now, "b_event_id": event_id}))
        last_by_address: dict[str, int] = {}
        for upd in changes.updates:
            last_by_address[upd.address] = max(last_by_address.get(upd.address, 0), upd.sequence)
        contact_ids, created = await self._contact_ids(decision, changes, now, last_by_address)
        held["event_address"].extend(
            {"event_id": event_id, "address": a, "contact_id": contact_ids.get(a)}
            for a in dict.fromkeys(a.address for a in decision.actions) if a not in erased)
        # One row per key (PostgreSQL refuses to update a row twice in one INSERT ... ON
        # CONFLICT); the last change wins, as it would one row at a time.
        suppressions = {s.address: {"address": s.address, "contact_id": contact_ids.get(s.address),
                                    "reason": s.reason, "active": True, "event_id": event_id,
                                    "created_at": now, "released_at": None}
                        for s in changes.suppressions}
        held["suppression"].extend(suppressions.values())
        if changes.soft_bounces:
            held["soft_bounce"].extend(
                {"address": s.address, "ref": s.ref, "status": s.status, "reason": s.reason, "event_id": event_id,
                 "occurred_at": now, "cleared_at": None} for s in changes.soft_bounces)
        if changes.cleared:
            held["updates"].append((CLEAR_SOFT, {"addresses": list(changes.cleared), "b_now": now}))
        if changes.releases:
            held["updates"].append((RELEASE, {"addresses": list(changes.releases), "b_now": now,
                                              "b_event_id": event_id}))
        preferences = {(contact_ids[p.address], p.unit, p.channel): {
            "contact_id": contact_ids[p.address], "unit": p.unit, "channel": p.channel, "state": p.state.value,
            "reason": p.reason, "source": decision.source, "event_id": event_id, "changed_at": p.at or now}
            for p in changes.preferences}
        held["preference"].extend(preferences.values())
        if changes.memberships:
            held["updates"].append((JOIN, [{"contact_id": contact_ids[m.address], "unit": m.unit, "source": "import",
                                            "event_id": event_id, "joined_at": now} for m in changes.memberships]))
        for p in changes.profiles:
            if p.name is not None:
                held["updates"].append((PROFILE_NAME, {"b_id": contact_ids[p.address], "b_name": p.name,
                                                       "b_now": now}))
            if p.recipient_id is not None:
                held["updates"].append((PROFILE_RID, {"b_id": contact_ids[p.address], "b_rid": p.recipient_id,
                                                      "b_now": now}))
        last_seq: dict[int, int] = {}
        outbox = []
        for upd in changes.updates:
            contact_id = contact_ids[upd.address]
            outbox.append({"event_id": event_id, "contact_id": contact_id, "sequence": upd.sequence,
                           "routing_key": upd.routing_key, "payload": {**upd.payload, "contact_id": contact_id},
                           "created_at": now, "published_at": None, "claimed_until": self.claimed_until})
            last_seq[contact_id] = max(last_seq.get(contact_id, 0), upd.sequence)
        held["outbox"].extend(outbox)
        if self.claimed_until is None:
            conn.outbox_rows += len(outbox)       # relays are told of these after the commit
        else:
            self.claimed_rows.extend(outbox)      # the consumer publishes these itself
        held["contact_seq"].extend({"b_id": contact_id, "b_seq": seq, "b_now": now}
                                   for contact_id, seq in last_seq.items()
                                   if contact_id not in created)   # a new contact is written with its sequence
        if changes.address_changes:               # rectification (worker.store.rectify)
            held["updates"].extend(address_change_writes(changes.address_changes))
            for change in changes.address_changes:    # read both afresh if this transaction asks again
                for address in (change.old, change.new):
                    self._contact_of.pop(address, None)
                    self._prefetched.pop(address, None)
        if changes.leaves:                        # units' lists left on an opt-out (on_unsubscribe)
            held["updates"].append((LEAVE, [{"b_contact": contact_ids[m.address], "b_unit": m.unit}
                                            for m in changes.leaves if m.address in contact_ids]))
        if changes.erasures:
            await self.flush()                    # the event and its update first: the tombstone refers to it
            await erase_rows(conn, changes.erasures, event_id, now)
            # The received message this decision came from (an emailed opt-out that erases) is
            # still being handled, so erase_rows leaves it: it goes here, in the same transaction.
            await conn.execute(BLANK_ITEMS, {"ids": [decision.item_id]})
        if changes.retention:                     # rows past their retention period (worker.store.retention)
            await self.flush()
            done = await retain_rows(conn, changes.retention, event_id, now)
            for key, n in done.items():
                self.retained[key] = self.retained.get(key, 0) + n

    async def _contact_ids(self, decision: Decision, changes: Plan, now: datetime,
                           seq_of: dict[str, int]) -> tuple[dict[str, int], set[int]]:
        """The contact of each address the decision acts on, and the ids of the contacts
        created here (with `seq_of[address]`, the last sequence this change gives them)."""
        addresses = list(dict.fromkeys(a.address for a in decision.actions))
        if all(a in self._contact_of for a in addresses):    # read by load_state in this transaction
            found = {a: c for a in addresses if (c := self._contact_of[a]) is not None}
        elif addresses:
            await self.flush()
            found = dict((await self.conn.execute(ADDRESS_CONTACTS, {"addresses": addresses})).all())
        else:
            found = {}
        created: set[int] = set()
        for address in changes.new_contacts:
            if address in found:
                continue
            contact = {"name": None, "origin": decision.kind.value, "seq": seq_of.get(address, 0),
                       "created_at": now, "updated_at": now}
            contact_id = self._reserved_ids.pop(address, None)
            if contact_id is not None:
                self._held["contact"].append({"id": contact_id, **contact})
            else:                                 # a contact has no references: written at once
                contact_id = (await self.conn.execute(NEW_CONTACT, contact)).scalar_one()
            self._held["address"].append({"contact_id": contact_id, "channel": "email", "address": address,
                                          "created_at": now})
            found[address] = self._contact_of[address] = contact_id
            created.add(contact_id)
        return found, created
