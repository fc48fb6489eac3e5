"""worker.store.db.GroupCommit: concurrent submissions share a flush; each hears only its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from worker.store.db import GroupCommit


class Recorder:
    def __init__(self, fail_items: set[int] = frozenset(), fail_batch: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail_items, self.fail_batch = fail_items, fail_batch
        self.gate = asyncio.Event()
        self.gate.set()

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail_batch:
            raise OSError("disk gone")
        return [ValueError(f"bad {i}") if i in self.fail_items else i * 10 for i in items]


async def test_submissions_made_while_a_flush_runs_share_the_next_one():
    rec = Recorder()
    rec.gate.clear()
    gc = GroupCommit(rec.flush)
    first = asyncio.create_task(gc.submit(1))
    await asyncio.sleep(0.01)                    # the first flush is running, held at the gate
    rest = [asyncio.create_task(gc.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0.01)
    rec.gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert rec.batches == [[1], [2, 3, 4, 5, 6]]
    assert (gc.flushes, gc.items) == (2, 6)


async def test_an_item_failure_reaches_only_its_submitter():
    gc = GroupCommit(Recorder(fail_items={3}).flush)
    results = await asyncio.gather(*(gc.submit(i) for i in range(1, 5)), return_exceptions=True)
    assert results[0] == 10 and results[1] == 20 and results[3] == 40
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad 3"


async def test_a_failed_flush_fails_every_submitter_of_that_batch_and_the_next_batch_still_runs():
    rec = Recorder(fail_batch=True)
    gc = GroupCommit(rec.flush)
    results = await asyncio.gather(*(gc.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    rec.fail_batch = False
    assert await gc.submit(7) == 70


async def test_a_submission_after_the_runner_finished_is_flushed():
    rec = Recorder()
    gc = GroupCommit(rec.flush)
    assert await gc.submit(1) == 10
    # No pause here: the runner may still be in its last step when the next item arrives.
    assert await asyncio.wait_for(gc.submit(2), 5) == 20
    await asyncio.sleep(0)
    assert await asyncio.wait_for(gc.submit(3), 5) == 30


async def test_batches_are_capped():
    rec = Recorder()
    rec.gate.clear()
    gc = GroupCommit(rec.flush, max_batch=2)
    tasks = [asyncio.create_task(gc.submit(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    rec.gate.set()
    await asyncio.gather(*tasks)
    assert [len(b) for b in rec.batches] == [2, 2, 1]


@pytest.mark.parametrize("parallel", [1, 3])
async def test_parallel_flushes_are_bounded(parallel: int):
    running = peak = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return items

    gc = GroupCommit(flush, max_batch=1, parallel=parallel)
    assert await asyncio.gather(*(gc.submit(i) for i in range(10))) == list(range(10))
    assert peak == parallel
