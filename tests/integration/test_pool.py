"""worker.pipeline.pool: one hostile message costs one worker process, never the event loop or the pool."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import datetime, timezone

import pytest

from handlers.context import Context
from handlers.classify import classify as real_classify
from handlers.model import Decision, Inbound, Kind
from tests.support.hostile import pathological_message
from tests.support.pool_fns import act
from worker.pipeline.pool import ClassifyCrashed, ClassifyFailed, ClassifyPool, ClassifyTimeout

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
# Bound on every await: a test that would hang fails instead. Worker start-up
# (forkserver, then importing pydantic and the settings) is included.
BOUND = 30


def inbound(raw: bytes) -> Inbound:
    return Inbound.from_smtp(raw, "sender@example.net", ["bounces@example.org"], NOW)


async def run(pool: ClassifyPool, raw: bytes) -> Decision:
    return await asyncio.wait_for(pool.classify(inbound(raw), NOW), BOUND)


@pytest.fixture
def settings(settings_factory):
    return settings_factory()


@pytest.fixture
async def pool(settings):
    async with ClassifyPool(settings, classify_fn=act, workers=1, cpu_seconds=1, wall_seconds=8,
                            memory_mb=256) as pool:
        yield pool


async def test_returns_the_decision_made_in_the_worker(pool, settings):
    decision = await run(pool, b"hello")
    assert decision == Decision.ignore(inbound(b"hello").id, Kind.UNKNOWN, reason="ok hello")
    assert decision.evidence == {"mail_domain": settings.mail_domain}   # settings reached the worker
    assert int((await run(pool, b"pid")).reason) != os.getpid()


async def test_cpu_bound_item_times_out_and_the_pool_goes_on(pool):
    with pytest.raises(ClassifyTimeout, match="cpu time limit"):
        await run(pool, b"busy")
    assert (await run(pool, b"after")).reason == "ok after"


async def test_memory_hog_fails_and_the_pool_goes_on(pool):
    with pytest.raises(ClassifyFailed, match="memory") as caught:
        await run(pool, b"hog")
    assert isinstance(caught.value, ClassifyCrashed)
    assert (await run(pool, b"after")).reason == "ok after"


@pytest.mark.parametrize("raw, reason", [(b"segv", "SIGSEGV"), (b"exit", "exited with code 3")])
async def test_dying_worker_is_a_crash_and_is_replaced(pool, raw, reason):
    with pytest.raises(ClassifyCrashed, match=reason):
        await run(pool, raw)
    assert (await run(pool, b"after")).reason == "ok after"


async def test_sleeping_item_hits_the_wall_clock_limit(settings):
    async with ClassifyPool(settings, classify_fn=act, workers=1, cpu_seconds=5, wall_seconds=1) as pool:
        with pytest.raises(ClassifyTimeout, match="wall time limit"):
            await run(pool, b"sleep")
        assert (await run(pool, b"after")).reason == "ok after"


async def test_a_workers_start_up_does_not_count_against_an_items_wall_time(settings):
    """Pebble counted the limit from when a worker began the item; so does this pool. A
    new worker spends a good part of a second starting on a busy machine (here: a second,
    importing its classifier), and a quick item must not be timed out for that."""
    from tests.support.slow_start_fns import quick

    async with ClassifyPool(settings, classify_fn=quick, workers=1, wall_seconds=0.5) as pool:
        assert (await run(pool, b"first")).reason == "quick"


async def test_classifier_exception_is_named_by_type(pool):
    with pytest.raises(ClassifyFailed, match=r"^ValueError: no header named X-Test$") as caught:
        await run(pool, b"raise")
    assert type(caught.value) is ClassifyFailed
    assert (await run(pool, b"after")).reason == "ok after"


async def test_worker_killed_while_idle_does_not_break_the_pool(pool):
    pid = int((await run(pool, b"pid")).reason)
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)        # the pool notices the dead idle worker (its pipe closes)
    assert (await run(pool, b"after")).reason == "ok after"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_cancelled_caller_stops_the_worker_working_for_it(pool):
    pid = int((await run(pool, b"pid")).reason)
    task = asyncio.create_task(pool.classify(inbound(b"sleep"), NOW))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(pid), "the worker went on with an item nobody waits for"
    assert int((await run(pool, b"pid")).reason) not in (pid, os.getpid())


async def test_quick_items_finish_while_another_is_stuck(settings):
    async with ClassifyPool(settings, classify_fn=act, workers=2, cpu_seconds=3, wall_seconds=8) as pool:
        await asyncio.gather(run(pool, b"warm"), run(pool, b"up"))     # both workers started
        stuck = asyncio.create_task(run(pool, b"busy"))
        quick = [await run(pool, f"quick {i}".encode()) for i in range(5)]
        assert [d.reason for d in quick] == [f"ok quick {i}" for i in range(5)]
        assert not stuck.done()                                         # still burning its budget
        with pytest.raises(ClassifyTimeout):
            await stuck


async def test_burst_waits_for_a_free_worker(pool):
    decisions = await asyncio.gather(*(run(pool, f"item {i}".encode()) for i in range(10)))
    assert [d.reason for d in decisions] == [f"ok item {i}" for i in range(10)]


async def test_close_stops_a_running_item_and_is_idempotent(settings):
    pool = ClassifyPool(settings, classify_fn=act, workers=1, wall_seconds=60)
    await run(pool, b"warm")
    stuck = asyncio.create_task(pool.classify(inbound(b"sleep"), NOW))
    await asyncio.sleep(0.5)
    await asyncio.wait_for(pool.close(), BOUND)
    await asyncio.wait_for(pool.close(), BOUND)
    with pytest.raises(ClassifyFailed, match="stopped while classifying"):
        await asyncio.wait_for(stuck, BOUND)
    with pytest.raises(ClassifyFailed, match="closed"):
        await pool.classify(inbound(b"late"), NOW)


async def beat(lateness: list[float]) -> None:
    """Record how late the event loop wakes up from 10 ms sleeps."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(0.01)
        lateness.append(loop.time() - start - 0.01)


async def test_a_large_item_for_a_worker_still_starting_does_not_hold_up_the_loop(settings):
    """A fresh worker reads nothing until it has started (imports and all, a good part of a
    second); an item larger than a pipe's buffer must not make the loop wait for that."""
    lateness: list[float] = []
    heartbeat = asyncio.create_task(beat(lateness))
    try:
        async with ClassifyPool(settings, classify_fn=act, workers=1, wall_seconds=20) as pool:
            decision = await run(pool, b"big " + b"x" * (4 << 20))
            assert decision.reason.startswith("ok big xxx")
    finally:
        heartbeat.cancel()
    assert lateness and max(lateness) < 0.3


async def test_real_classifier_reads_the_old_pathological_message_quickly(settings):
    """This 320 kB message once took the real classifier ~9 s of CPU (the standard library's
    quadratic parameter reader); handlers.mail.message now caps what reaches it, so it takes
    about as long as an ordinary 300 kB message instead of dozens of times longer."""
    import time

    ordinary = (b"From: Anna <anna@example.net>\r\nTo: reply@example.org\r\nSubject: hello\r\n"
                b"Message-ID: <n1@example.net>\r\n\r\n" + b"Just saying hello.\r\n" * 16_000)
    started = time.process_time()
    real_classify(inbound(ordinary), Context.from_settings(settings), NOW)
    baseline = time.process_time() - started
    started = time.process_time()
    decision = real_classify(inbound(pathological_message()), Context.from_settings(settings), NOW)
    took = time.process_time() - started
    assert "classifier error" not in decision.reason
    assert took < 10 * max(baseline, 0.01), (took, baseline)


async def test_the_pool_stops_a_classifier_that_spins_while_others_flow(settings):
    """The real classifier, with a stand-in spin for a marked message: the pool stops it at ~1 s."""
    from tests.support.pool_fns import poison_message, poisoned

    normal = (b"From: Anna <anna@example.net>\r\nTo: reply@example.org\r\nSubject: hello\r\n"
              b"Message-ID: <n1@example.net>\r\n\r\nJust saying hello.\r\n")
    lateness: list[float] = []
    heartbeat = asyncio.create_task(beat(lateness))
    try:
        async with ClassifyPool(settings, classify_fn=poisoned, workers=2, cpu_seconds=1, wall_seconds=20) as pool:
            hostile = asyncio.create_task(run(pool, poison_message()))
            decision = await run(pool, normal)
            assert decision == real_classify(inbound(normal), Context.from_settings(settings), NOW)
            with pytest.raises(ClassifyTimeout, match="cpu time limit"):
                await hostile
            assert await run(pool, normal) == decision
    finally:
        heartbeat.cancel()
    # Starting workers, parsing and killing all happen off the loop: it never stalls
    # (the bound is loose on purpose; a blocked loop would be late by seconds).
    assert max(lateness) < 1.0

# --- lanes (issue 22) ------------------------------------------------------------------------

SPIN_SECONDS = 0.6


def spin_or_act(item: Inbound, ctx: object, now: datetime) -> Decision:
    """In the worker: `spin ...` keeps the CPU busy for SPIN_SECONDS and succeeds (a large
    message that is slow but within its limits); anything else is tests.support.pool_fns.act."""
    import time

    if item.raw.startswith(b"spin"):
        until = time.monotonic() + SPIN_SECONDS
        while time.monotonic() < until:
            pass
        return Decision.ignore(item.id, Kind.UNKNOWN, reason="spun")
    return act(item, ctx, now)


async def timed(pool: ClassifyPool, raw: bytes) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await run(pool, raw)).reason == f"ok {raw.decode()}"
    return loop.time() - started


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def test_ordinary_items_overtake_a_burst_of_large_slow_ones(settings):
    """Six large items (over heavy_bytes), each slow but within its limits, arrive before
    ordinary ones. Before the lanes they held both workers and an ordinary item waited for
    them (about three spins, 1.8 s); now they hold at most workers - light_workers, and an
    ordinary item takes about as long as with no burst: measured against the calm time of
    the same run, never an absolute time."""
    async with ClassifyPool(settings, classify_fn=spin_or_act, workers=2, cpu_seconds=5, wall_seconds=20,
                            heavy_bytes=1024) as pool:
        await asyncio.gather(run(pool, b"warm"), run(pool, b"up"))              # both workers started
        calm = [await timed(pool, f"calm {i}".encode()) for i in range(7)]
        burst = [asyncio.create_task(pool.classify(inbound(b"spin " + b"x" * 4096 + bytes([65 + i])), NOW))
                 for i in range(6)]
        for _ in range(200):                                                    # bounded: the burst has begun
            if pool.lanes.heavy:
                break
            await asyncio.sleep(0.01)
        during = [await timed(pool, f"during {i}".encode()) for i in range(7)]
        waiting = sum(not t.done() for t in burst)
        decisions = await asyncio.wait_for(asyncio.gather(*burst), BOUND)
    assert [d.reason for d in decisions] == ["spun"] * 6
    assert waiting >= 3, "the burst was over before the ordinary items were measured"
    assert median(during) <= 5 * median(calm), (calm, during)


async def test_small_items_that_run_long_leave_a_worker_for_ordinary_ones(settings):
    """Items small enough for the light lane that get stuck: once they have run
    slow_seconds they count as heavy, and an ordinary item gets a worker of its own
    (started for it) instead of waiting for their wall-time limit."""
    async with ClassifyPool(settings, classify_fn=act, workers=2, wall_seconds=20, slow_seconds=0.3) as pool:
        await asyncio.gather(run(pool, b"warm"), run(pool, b"up"))
        stuck = [asyncio.create_task(pool.classify(inbound(f"sleep {i}".encode()), NOW)) for i in range(2)]
        try:
            assert (await run(pool, b"quick")).reason == "ok quick"
            assert not any(s.done() for s in stuck)          # answered while both workers were stuck
            assert pool.lanes.promoted == 2
        finally:
            for s in stuck:
                s.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)


async def test_heavy_items_keep_moving_while_ordinary_ones_stream(settings):
    """The heavy lane is never starved: with ordinary items always waiting, a heavy one
    still gets the next worker whenever none is running."""
    async with ClassifyPool(settings, classify_fn=act, workers=1, heavy_bytes=1024) as pool:
        await run(pool, b"warm")
        light = [asyncio.create_task(run(pool, f"light {i}".encode())) for i in range(20)]
        heavy = asyncio.create_task(run(pool, b"large " + b"y" * 2048))
        done, _ = await asyncio.wait([heavy, *light], return_when=asyncio.FIRST_COMPLETED, timeout=BOUND)
        assert (await heavy).reason.startswith("ok large")
        finished_before = sum(t.done() for t in light)
        await asyncio.gather(*light)
    assert finished_before < 20                              # it did not wait for every ordinary item


async def test_the_lanes_on_the_books():
    """Lanes' rules without processes: heavy items hold at most workers - light_workers;
    a waiting light item goes first while a heavy one runs; with none running, a heavy one
    goes first; a slow light item counts as heavy and frees room for a light one."""
    from worker.pipeline.pool import Lanes

    lanes = Lanes(workers=2, light_workers=1)
    h1 = await lanes.acquire(True)
    h2 = asyncio.create_task(lanes.acquire(True))             # over the heavy cap: waits
    await asyncio.sleep(0)
    assert not h2.done()
    l1 = await lanes.acquire(False)                            # the worker kept for light items
    l2 = asyncio.create_task(lanes.acquire(False))             # both workers busy: waits
    await asyncio.sleep(0)
    assert not l2.done() and (lanes.heavy, lanes.light) == (1, 1)
    lanes.release(l1)                                          # light first while a heavy one runs
    await asyncio.sleep(0)
    assert l2.done() and not h2.done()
    l3 = asyncio.create_task(lanes.acquire(False))
    await asyncio.sleep(0)
    lanes.release(h1)                                          # no heavy running: the heavy one first
    await asyncio.sleep(0)
    assert h2.done() and not l3.done() and (lanes.heavy, lanes.light) == (1, 1)
    lanes.promote(l2.result())                                 # the light one ran long: now heavy
    await asyncio.sleep(0)
    assert l3.done() and (lanes.heavy, lanes.light) == (2, 1) and lanes.promoted == 1   # an extra process
    for t in (h2.result(), l2.result(), l3.result()):
        lanes.release(t)
        lanes.release(t)                                       # twice changes nothing
    assert (lanes.heavy, lanes.light) == (0, 0)
