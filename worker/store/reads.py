"""What a unit of work reads: the state a decision is planned on, read ahead for a batch of
decisions or loaded per decision, and the lookups of imports, reviews and the spoofing guard.

Every read first flushes the writes the unit of work holds, so it sees every earlier
`record` (worker.store.unit_of_work).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.model import State
from handlers.events.rights import all_digests
from handlers.state.plan import (ContactState, CurrentState, PreferenceRow, Profile, ReviewState, SoftBounceRow,
                                 TombstoneRow)
from handlers.tokens import Keyring
from worker.store.connection import WriteConn
from worker.store.statements import (CONTACT_ADDRESSES, EVENTS_EXISTING, MARKS_QUERIES, PROFILES, RECENT_UNVERIFIED,
                                     RECIPIENT_IDS, REVIEW_STATE, STATE_CONTACTS, TOMBSTONES)


class StateReads:
    """The reads of SqlUnitOfWork, and what they keep for its `record` within one transaction.

    A class that uses these provides `conn` (the transaction's connection), `flush`
    (make the held writes), and `_pg` (the database is PostgreSQL), and calls
    `_forget_reads` when a transaction starts.
    """

    _pg: bool

    @property
    def conn(self) -> WriteConn:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    def _forget_reads(self) -> None:
        self._reserved_ids: dict[str, int] = {}            # PostgreSQL: address -> id for its new contact
        self._contact_of: dict[str, int | None] = {}      # address -> contact, as read in this transaction
        # read_ahead's rows per address, for addresses no load_state has asked about
        # yet (after that, record may have changed them, so they are read again).
        self._prefetched: dict[str, tuple[list[Any], list[Any]]] = {}
        self._prefetch_since: datetime | None = None
        # Contacts some load_state has read in this transaction: their sequence and
        # preferences may change from then on, whichever of their addresses is asked.
        self._loaded_contacts: set[int] = set()

    async def recent_unverified_optouts(self, since: datetime) -> int:
        """Unverified opt-outs acted on (not held for review) since `since`: the spoofing guard's count."""
        await self.flush()
        return (await self.conn.execute(RECENT_UNVERIFIED, {"since": since})).scalar() or 0

    async def profiles(self, addresses: list[str]) -> dict[str, Profile]:
        """Name, recipient id and units of the contact of each known address (for an import)."""
        await self.flush()
        found: dict[str, tuple[str | None, str | None, set[str]]] = {}
        for address, name, rid, unit in (await self.conn.execute(PROFILES, {"addresses": addresses})).all():
            entry = found.setdefault(address, (name, rid, set()))
            if unit is not None:
                entry[2].add(unit)
        return {a: Profile(name, rid, frozenset(units)) for a, (name, rid, units) in found.items()}

    async def review_state(self, review_id: int) -> ReviewState | None:
        """The review item as this transaction sees it, or None when there is no such item."""
        await self.flush()
        rows = (await self.conn.execute(REVIEW_STATE, {"b_id": review_id})).all()
        row = rows[0] if rows else None
        if row is None:
            return None
        return ReviewState(review_id=row[0], resolved=(row[1] or "resolved") if row[2] is not None else None)

    async def contacts_by_recipient_id(self, recipient_ids: list[str]) -> dict[str, int]:
        """The contact imported with each recipient id, for the ids that have one."""
        await self.flush()
        return {rid: cid for rid, cid in (await self.conn.execute(RECIPIENT_IDS, {"rids": recipient_ids})).all()}

    async def contact_addresses(self, contact_ids: list[int]) -> dict[int, str]:
        """The first email address of each contact that exists."""
        await self.flush()
        found: dict[int, str] = {}
        for contact_id, address in (await self.conn.execute(CONTACT_ADDRESSES, {"ids": contact_ids})).all():
            found.setdefault(contact_id, address)
        return found

    async def read_ahead(self, item_ids: list[str], addresses: list[str], soft_since: datetime) -> set[str]:
        """The item ids among `item_ids` that already have an event; and the state of
        every address the transaction's decisions will ask about, read in two queries
        in all (their contacts locked, as load_state would). The contacts are locked
        before the events are looked at: an item that another transaction was applying
        meanwhile is then seen as done, not written twice."""
        await self.flush()
        if not addresses:
            return set((await self.conn.execute(EVENTS_EXISTING[self._pg], {"item_ids": item_ids})).scalars())
        rows: dict[str, tuple[list[Any], list[Any]]] = {a: ([], []) for a in addresses}
        for row in (await self.conn.execute(STATE_CONTACTS[self._pg], {"addresses": addresses})).all():
            rows[row[0]][0].append(row)
        existing: set[str] = set()
        for row in (await self.conn.execute(*self._marks_query(addresses, soft_since, item_ids))).all():
            if row[0] == "event":
                existing.add(row[1])
            else:
                rows[row[1]][1].append(row)
        self._prefetched.update(rows)
        self._prefetch_since = soft_since
        return existing

    def _marks_query(self, addresses: list[str], soft_since: datetime,
                     item_ids: list[str] | None = None) -> tuple[Any, dict[str, Any]]:
        params: dict[str, Any] = {"addresses": addresses, "since": soft_since}
        if item_ids:
            params["item_ids"] = item_ids
        return MARKS_QUERIES[self._pg, bool(item_ids)], params

    async def load_state(self, addresses: list[str], soft_since: datetime) -> CurrentState:
        state = CurrentState()
        if not addresses:
            return state
        conn = self.conn
        if soft_since == self._prefetch_since and all(
                a in self._prefetched and not any(row[1] in self._loaded_contacts for row in self._prefetched[a][0])
                for a in addresses):
            contact_rows = [row for a in addresses for row in self._prefetched[a][0]]
            marks = sorted((row for a in addresses for row in self._prefetched[a][1]),
                           key=lambda row: (row[3] is None, row[3] or soft_since))
        else:
            await self.flush()
            contact_rows = (await conn.execute(STATE_CONTACTS[self._pg], {"addresses": addresses})).all()
            marks = (await conn.execute(*self._marks_query(addresses, soft_since))).all()
        for address in addresses:
            self._contact_of[address] = None
            self._prefetched.pop(address, None)        # record may change it from now on
        self._loaded_contacts.update(row[1] for row in contact_rows)
        for address, contact_id, seq, unit, channel, pstate, changed_at in contact_rows:
            cs = state.contacts.get(address)
            if cs is None:
                cs = state.contacts[address] = ContactState(contact_id=contact_id, seq=seq)
                self._contact_of[address] = contact_id
            if unit is not None:
                cs.preferences[(unit, channel)] = PreferenceRow(unit, channel, State(pstate), changed_at)
        for mark, address, detail, at in marks:
            if mark == "suppressed":
                state.suppressed[address] = detail
            elif mark == "new_contact":
                self._reserved_ids[address] = int(detail)
            else:
                state.soft_bounces.setdefault(address, []).append(SoftBounceRow(detail, at))
        unknown = [a for a in addresses if a not in state.contacts]
        keys = getattr(getattr(self, "_db", None), "tombstone_keys", None)
        if unknown and keys is not None:
            state.tombstones = await self._tombstones(unknown, keys)
        return state

    async def _tombstones(self, addresses: list[str], keys: Keyring) -> dict[str, TombstoneRow]:
        """The tombstones of addresses that have no contact, found by their keyed hash under every key."""
        wanted: dict[str, str] = {}
        for address in addresses:
            wanted.update({digest: address for digest in all_digests(keys, address)})
        await self.flush()
        found: dict[str, TombstoneRow] = {}
        for digest, key_id, optouts, suppression, erased_at in (
                await self.conn.execute(TOMBSTONES, {"digests": list(wanted)})).all():
            found[wanted[digest]] = TombstoneRow(key_id, digest, tuple((str(u), str(c)) for u, c in optouts),
                                                 suppression, erased_at)
        return found
