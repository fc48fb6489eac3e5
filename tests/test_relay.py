"""The outbox relay's loop: woken by commits, never waiting on its poll for work it was told of."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from handlers.apply import apply
from handlers.model import Action, ActionType, Decision, Kind
from worker.relay import Relay
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
