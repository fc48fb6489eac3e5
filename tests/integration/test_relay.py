"""The outbox relay's loop: woken by commits, never waiting on its poll for work it was
told of; and the consumer's hand-off, whose rows relays leave alone until its lease ends."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from handlers.state.apply import apply, apply_all
from handlers.model import Action, ActionType, Decision, Kind
from worker.outbox.relay import Handoff, Relay
from tests.conftest import make_settings

T0 = datetime(2026, 3, 3, 12, 0, tzinfo=timezone.utc)


def optout(i: int) -> Decision:
    act = Action(ActionType.UNSUBSCRIBE, f"r{i}@example.se", units=("alumni",), channels=("email",))
    return Decision(item_id=f"r{i}", kind=Kind.OPTOUT, actions=(act,), reason="t")


async def test_a_commit_made_while_the_relay_publishes_is_published_without_a_poll(database):
    """The relay drains once per wake when the batch was not full. A row committed
    while it publishes must still wake it: the poll (30 s here) must not be what finds it."""
    later: list[asyncio.Task[None]] = []
    published: list[str] = []

    class Publisher:
        async def publish(self, updates):
            published.extend(u.payload["address"] for u in updates)
            if not later:              # commits beside the relay's own transaction, as a consumer would
                later.append(asyncio.create_task(apply(optout(2), database.unit_of_work(), T0)))
                await asyncio.sleep(0.2)

    relay = Relay(make_settings(UNSUBD_RELAY__POLL_INTERVAL="30"), database, Publisher(), lambda: T0)
    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    try:
        await asyncio.sleep(0.1)       # the relay is waiting for a wake now
        await apply(optout(1), database.unit_of_work(), T0)
        for _ in range(100):
            if len(published) == 2:
                break
            await asyncio.sleep(0.05)
        assert published == ["r1@example.se", "r2@example.se"]
    finally:
        stopping.set()
        await asyncio.wait_for(running, 10)
        await asyncio.gather(*later)


async def test_a_batch_whose_publish_fails_stays_for_the_next_drain_which_publishes_each_row_once(database):
    """A refused publish rolls the claim back (no row marked, none lost); the next
    drains, in batches of two and then one, publish every row once."""
    for i in (1, 2, 3):
        await apply(optout(i), database.unit_of_work(), T0)
    settings = make_settings(UNSUBD_RELAY__BATCH="2")
    refused = Recording(refuse=True)
    with pytest.raises(ConnectionError):
        await Relay(settings, database, refused, lambda: T0).drain_once()
    assert await unpublished(database) == 3
    working = Recording()
    relay = Relay(settings, database, working, lambda: T0)
    assert [await relay.drain_once(), await relay.drain_once(), await relay.drain_once()] == [2, 1, 0]
    assert working.addresses == ["r1@example.se", "r2@example.se", "r3@example.se"]
    assert await unpublished(database) == 0


async def test_relays_side_by_side_publish_each_row_once(database):
    """Two relays draining at the same time (PostgreSQL: each skips the rows the other
    has claimed; SQLite: they take turns) publish every row exactly once."""
    for i in range(1, 7):
        await apply(optout(i), database.unit_of_work(), T0)
    published: list[str] = []

    class Slow:
        async def publish(self, updates):
            await asyncio.sleep(0.05)            # the other relay claims meanwhile
            published.extend(u.payload["address"] for u in updates)

    settings = make_settings(UNSUBD_RELAY__BATCH="2")
    counts = await asyncio.gather(*(Relay(settings, database, Slow(), lambda: T0).drain() for _ in range(2)))
    assert sum(counts) == 6 and sorted(published) == sorted(f"r{i}@example.se" for i in range(1, 7))
    assert await unpublished(database) == 0


# ------------------------------------------------------------------ hand-off (production)


class Recording:
    """A Publisher that keeps what it was given, or refuses everything."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.addresses: list[str] = []

    async def publish(self, updates):
        if self.refuse:
            raise ConnectionError("broker away")
        self.addresses.extend(u.payload["address"] for u in updates)


async def committed_by_a_consumer(database, handoff: Handoff, *decisions: Decision) -> list[dict]:
    """Apply `decisions` as the production consumer does: rows claimed for `handoff`."""
    claimed: list[dict] = []

    async def work(conn):
        uow = database.unit_of_work(joined=conn)
        uow.claimed_until, uow.claimed_rows = handoff.claim_until(), claimed
        return await apply_all(list(decisions), uow, T0)

    woken: list[int] = []
    database.on_outbox(lambda: woken.append(1))
    await database.write(work)
    assert woken == []                 # claimed rows wake no relay
    return claimed


async def unpublished(database) -> int:
    return await Relay(make_settings(), database, Recording(), lambda: T0).backlog()


async def test_a_consumer_publishes_what_it_committed_and_no_relay_repeats_it(database):
    publisher = Recording()
    handoff = Handoff(make_settings(), database, publisher, lambda: T0)
    rows = await committed_by_a_consumer(database, handoff, optout(1), optout(2))
    assert [r["payload"]["address"] for r in rows] == ["r1@example.se", "r2@example.se"]
    handoff.submit(rows)
    await handoff.close()
    assert publisher.addresses == ["r1@example.se", "r2@example.se"] and handoff.published == 2
    assert await unpublished(database) == 0
    later = Recording()
    assert await Relay(make_settings(), database, later, lambda: T0 + timedelta(hours=1)).drain() == 0
    assert later.addresses == []


async def test_rows_a_consumer_could_not_publish_wait_for_the_lease_then_a_relay_takes_them(database):
    settings = make_settings(UNSUBD_RELAY__HANDOFF_LEASE="5")
    handoff = Handoff(settings, database, Recording(refuse=True), lambda: T0)
    handoff.submit(await committed_by_a_consumer(database, handoff, optout(1)))
    await handoff.close()
    assert handoff.failed == 1 and await unpublished(database) == 1
    # Before the lease runs out a relay leaves the row to its consumer; after it, publishes it.
    early, late = Recording(), Recording()
    assert await Relay(settings, database, early, lambda: T0 + timedelta(seconds=4)).drain() == 0
    assert await Relay(settings, database, late, lambda: T0 + timedelta(seconds=5)).drain() == 1
    assert early.addresses == [] and late.addresses == ["r1@example.se"]
    assert await unpublished(database) == 0


async def test_a_consumer_that_dies_before_publishing_loses_nothing(database):
    """Committed, then the process is gone before its hand-off ran: the rows are only claimed."""
    handoff = Handoff(make_settings(), database, Recording(), lambda: T0)
    await committed_by_a_consumer(database, handoff, optout(1))      # never submitted
    published = Recording()
    relay = Relay(make_settings(), database, published, lambda: T0 + timedelta(seconds=6))
    assert await relay.drain() == 1 and published.addresses == ["r1@example.se"]


async def test_rows_written_without_a_hand_off_are_the_relays_at_once(database):
    await apply(optout(1), database.unit_of_work(), T0)
    published = Recording()
    assert await Relay(make_settings(), database, published, lambda: T0).drain() == 1


async def test_rows_committed_while_a_publish_awaits_its_confirm_go_out_next_together_in_order(database):
    """Not left to the relays (a NOTIFY and a transaction of their own later)."""
    release = asyncio.Event()

    class Slow(Recording):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        async def publish(self, updates):
            self.calls.append(len(updates))
            await release.wait()
            await super().publish(updates)

    publisher = Slow()
    handoff = Handoff(make_settings(), database, publisher, lambda: T0)
    handoff.submit(await committed_by_a_consumer(database, handoff, optout(1)))
    assert handoff.claim_until() == T0 + timedelta(seconds=5)          # still the consumer's
    handoff.submit(await committed_by_a_consumer(database, handoff, optout(2)))
    handoff.submit(await committed_by_a_consumer(database, handoff, optout(3)))
    relay = Relay(make_settings(), database, Recording(), lambda: T0)
    assert await relay.drain() == 0                                     # claimed: not the relays'
    release.set()
    await handoff.close()
    assert publisher.calls == [1, 2]
    assert publisher.addresses == ["r1@example.se", "r2@example.se", "r3@example.se"]
    assert handoff.published == 3 and await unpublished(database) == 0
