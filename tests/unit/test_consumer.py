"""The consumer's scheduling loop, with an in-memory queue (the loop logic alone)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from handlers.model import Decision, Inbound, Kind
from worker.pipeline.consumer import Consumer
from worker.queue.embedded import Claimed
from tests.conftest import make_settings

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


class CountingEvent(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait(self) -> bool:
        self.waits += 1
        return await super().wait()


class MemoryQueue:
    def __init__(self, n: int) -> None:
        self.arrived = CountingEvent()
        self.items = [Inbound.from_file(f"m{i}".encode(), "x", NOW) for i in range(n)]
        self.done_ids: list[str] = []
        self.claims = 0

    async def claim(self, limit: int) -> list[Claimed]:
        self.claims += 1
        taken, self.items = self.items[:limit], self.items[limit:]
        return [Claimed(item=i, attempts=1) for i in taken]

    async def done(self, item_id: str) -> None:
        self.done_ids.append(item_id)

    async def retry(self, item_id: str, error: str, attempts: int) -> float:
        raise AssertionError("no retries expected")

    async def park(self, item_id: str, error: str) -> None:
        raise AssertionError("no parking expected")


class NullUow:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def read_ahead(self, item_ids, addresses, soft_since):
        return set()

    async def load_state(self, addresses, soft_since):
        from handlers.state.plan import CurrentState
        return CurrentState()

    async def record(self, *args):
        return None

    async def commit(self):
        return None


async def test_with_every_slot_busy_arrivals_do_not_spin_the_loop():
    settings = make_settings(UNSUBD_CONSUMER__CONCURRENCY="2", UNSUBD_CONSUMER__POLL_INTERVAL="5")
    queue = MemoryQueue(6)
    gate = asyncio.Event()

    async def classify(item: Inbound, now: datetime) -> Decision:
        await gate.wait()
        return Decision.ignore(item.id, Kind.UNKNOWN, "test")

    consumer = Consumer(settings, queue, classify, NullUow, lambda: NOW)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    await asyncio.sleep(0.05)                  # both slots taken, four items still queued
    queue.arrived.set()                        # ... and new mail keeps arriving
    waits_before = queue.arrived.waits
    await asyncio.sleep(0.3)
    assert queue.arrived.waits - waits_before <= 1, "the loop re-armed on arrivals while full"
    assert queue.claims <= 2
    gate.set()                                 # release: the rest flows without polling delays
    for _ in range(100):
        if len(queue.done_ids) == 6:
            break
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert len(queue.done_ids) == 6 and consumer.counters.applied == 6
