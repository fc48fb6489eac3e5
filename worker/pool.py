"""A bounded pool of sandboxed processes that run `classify` one message at a time.

CPython's email package has inputs that take minutes of CPU (quadratic header parsing)
or crash the interpreter, so one hostile message must not stall the event loop or the
service. Each message is classified in a worker process under three limits:

- CPU time: per task, RLIMIT_CPU's soft limit is set to the CPU the worker has used so
  far plus `cpu_seconds` (rounded up to whole seconds, as the kernel counts them). The
  kernel stops a runaway parse with SIGXCPU, even inside C code.
- Wall time: pebble kills a task that runs longer than `wall_seconds` (a sleep, a lock,
  a worker stuck outside the CPU limit) and starts a replacement worker.
- Memory: RLIMIT_AS caps each worker's address space at `memory_mb`, so an allocation
  beyond it raises MemoryError (or kills the worker) instead of swapping the host.

Workers are started with "forkserver", never "fork": the parent runs an asyncio loop
with helper threads (aiosqlite, pebble's own), and forking a threaded process can copy
a held lock into the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import os
import pickle
import resource
import signal
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pebble

from handlers.model import Decision, Inbound

ClassifyFn = Callable[[Inbound, Any, datetime], Decision]
PARSER_NICENESS = 10        # added to the worker processes' nice value (see _init_worker)


class ClassifyFailed(Exception):
    """Classifying one item failed. `str(exc)` is a short reason a reviewer understands."""


class ClassifyTimeout(ClassifyFailed):
    """The item hit the CPU or wall-time limit; the same bytes would hit it again."""


class ClassifyCrashed(ClassifyFailed):
    """The worker process died (memory limit, segfault, killed) while classifying the item."""


class ClassifyPool:
    """Runs `classify_fn(item, settings, now)` in a bounded pool of worker processes.

    Limits default to `settings.parse` (workers, cpu_seconds, wall_seconds, memory_mb);
    the keyword arguments override them. `classify_fn` must be a picklable top-level
    function; by default it is `handlers.classify.classify`, imported in the worker.

    Usable as `async with ClassifyPool(settings) as pool: await pool.classify(item, now)`.
    """

    def __init__(
        self,
        settings: Any,
        *,
        classify_fn: ClassifyFn | None = None,
        workers: int | None = None,
        cpu_seconds: float | None = None,
        wall_seconds: float | None = None,
        memory_mb: int | None = None,
    ) -> None:
        parse = settings.parse
        self.workers = workers if workers is not None else parse.workers
        self.cpu_seconds = cpu_seconds if cpu_seconds is not None else parse.cpu_seconds
        self.wall_seconds = wall_seconds if wall_seconds is not None else parse.wall_seconds
        self.memory_mb = memory_mb if memory_mb is not None else parse.memory_mb
        # Settings is a frozen pydantic model and pickles as is; each worker gets it once.
        self._initargs = (settings, classify_fn, self.cpu_seconds, self.memory_mb)
        # Two items per worker are in flight: one running and one waiting in pebble's
        # channel, so a worker starts its next item without waiting for a round trip
        # through the event loop. A larger burst waits here, on the loop, instead of
        # piling up (bytes and all) in pebble's queue. Pebble counts the wall-time limit
        # from when a worker starts an item, so waiting there costs no budget.
        self._slots = asyncio.Semaphore(self.workers * 2)
        self._started: set[int] = set()     # pebble pools (by id) whose workers are running
        self._in_flight: dict[concurrent.futures.Future[Any], pebble.ProcessPool] = {}
        self._closed = False
        self._pool = self._new_pool()

    async def __aenter__(self) -> ClassifyPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def classify(self, item: Inbound, now: datetime) -> Decision:
        """Classify `item` in a worker process and return its Decision.

        Raises ClassifyTimeout when the CPU or wall-time limit was hit, ClassifyCrashed
        when the worker died or ran out of memory, and ClassifyFailed for anything else
        (an exception from the classifier, named by type, or a closed or broken pool).
        """
        async with self._slots:
            pool, future = await self._schedule(item, now)
            self._in_flight[future] = pool
            try:
                return await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                # Either our caller was cancelled (wrap_future then cancels the pebble task,
                # and pebble stops the worker running it), or close() or a pool replacement
                # cancelled the task under us.
                task = asyncio.current_task()
                if future.cancelled() and task is not None and not task.cancelling():
                    raise ClassifyFailed("classifier pool stopped while classifying") from None
                raise
            except ClassifyFailed:
                raise                                   # already worded by the worker
            except concurrent.futures.TimeoutError:
                raise ClassifyTimeout(f"wall time limit ({self.wall_seconds:g}s) exceeded") from None
            except pebble.ProcessExpired as exc:
                raise self._expired(exc.exitcode) from None
            except concurrent.futures.BrokenExecutor as exc:
                if self._closed or pool is not self._pool:
                    # We stopped that pool ourselves (close, or a replacement), and pebble
                    # failed the task before _stop could cancel it.
                    raise ClassifyFailed("classifier pool stopped while classifying") from None
                raise ClassifyFailed(f"classifier pool broke: {exc or type(exc).__name__}") from None
            except Exception as exc:                    # e.g. the item would not pickle
                raise ClassifyFailed(_describe(exc)) from None
            finally:
                self._in_flight.pop(future, None)

    async def warm_up(self) -> None:
        """Start the worker processes and load the classifier in each, before real mail.

        Otherwise the first message waits for process start-up and imports (about half
        a second). Failures here are ignored: real items report their own.
        """
        probe = Inbound.from_file(b"", "warm-up", datetime.now(timezone.utc))
        await asyncio.gather(*(self.classify(probe, probe.received_at) for _ in range(self.workers)),
                             return_exceptions=True)

    async def close(self) -> None:
        """Stop the worker processes; items still in flight fail with ClassifyFailed.

        Idempotent, and never waits for a running classification to finish.
        """
        if self._closed:
            return
        self._closed = True
        await self._stop(self._pool)

    async def _schedule(
        self, item: Inbound, now: datetime
    ) -> tuple[pebble.ProcessPool, concurrent.futures.Future[Any]]:
        """Hand the item to pebble; replace the pebble pool once if it has broken."""
        for attempt in (1, 2):
            if self._closed:
                raise ClassifyFailed("classifier pool is closed")
            pool = self._pool
            try:
                if id(pool) in self._started:
                    future = pool.schedule(_classify_in_worker, args=(item, now), timeout=self.wall_seconds)
                else:
                    # In a thread: the first schedule starts the worker processes, which blocks.
                    future = await asyncio.to_thread(
                        pool.schedule, _classify_in_worker, args=(item, now), timeout=self.wall_seconds
                    )
                    self._started.add(id(pool))
            except RuntimeError as exc:
                # pebble gives up on the whole pool when a worker dies while no task is
                # running (killed while idle, or its initializer failed).
                if attempt == 2 or self._closed:
                    raise ClassifyFailed(f"classifier pool is not running: {exc}") from None
                if self._pool is pool:                  # another caller may have replaced it
                    self._pool = self._new_pool()
                    await self._stop(pool)
                continue
            if self._closed or pool is not self._pool:  # stopped while we were scheduling
                future.cancel()
                raise ClassifyFailed("classifier pool stopped while classifying")
            return pool, future
        raise AssertionError("unreachable")

    async def _stop(self, pool: pebble.ProcessPool) -> None:
        """Stop a pebble pool now, killing its running tasks, and fail their callers.

        A stopped (or broken) pebble pool never resolves the futures it still holds, so
        they are cancelled here; `classify` turns that into ClassifyFailed.
        """
        self._started.discard(id(pool))
        await asyncio.to_thread(_stop_now, pool)
        for future, owner in list(self._in_flight.items()):
            if owner is pool:
                future.cancel()

    def _new_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=self.workers,
            initializer=_init_worker,
            initargs=self._initargs,
            context=multiprocessing.get_context("forkserver"),
        )

    def _expired(self, exitcode: int | None) -> ClassifyFailed:
        """Word a worker's death by how it died (a negative exit code is the signal)."""
        if exitcode == -signal.SIGXCPU:
            return ClassifyTimeout(f"cpu time limit ({self.cpu_seconds:g}s) exceeded")
        if exitcode is not None and exitcode < 0:
            name = _signal_name(-exitcode)
            if -exitcode == signal.SIGKILL:
                return ClassifyCrashed(f"worker process killed by {name} (out of memory?)")
            return ClassifyCrashed(f"worker process crashed with {name}")
        return ClassifyCrashed(f"worker process exited with code {exitcode}")


def _stop_now(pool: pebble.ProcessPool) -> None:
    """Stop a pebble pool and wait for its workers to exit (blocking: run in a thread)."""
    pool.stop()
    pool.join()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- in the worker process -------------------------------------------------------

_settings: Any = None
_classify_fn: ClassifyFn | None = None
_cpu_seconds: float = 0.0
_memory_mb: int = 0


def _init_worker(settings: Any, classify_fn: ClassifyFn | None, cpu_seconds: float, memory_mb: int) -> None:
    """Pebble initializer: keep the settings, cap the address space, and never dump core.

    SIGXCPU's default action dumps core; a 1 GB core file per hostile message would be
    worse than the message itself.
    """
    global _settings, _classify_fn, _cpu_seconds, _memory_mb
    _settings, _classify_fn, _cpu_seconds, _memory_mb = settings, classify_fn, cpu_seconds, memory_mb
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Parsing is batch work; the event loop (SMTP replies, database round trips, confirms)
    # is latency work. At a lower priority the parsers still get every idle cycle, but the
    # loop's threads no longer queue behind them for a core each time they wake.
    os.nice(PARSER_NICENESS)
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _classify_in_worker(item: Inbound, now: datetime) -> Decision:
    """Run the classifier on one item under a fresh CPU budget; word every failure."""
    global _classify_fn
    try:
        if _classify_fn is None:
            # Imported here, not in the parent: the parent never needs the email code.
            from handlers.classify import classify

            _classify_fn = classify
    except Exception as exc:
        raise ClassifyFailed(f"cannot load the classifier: {_describe(exc)}") from exc

    # The hard limit stays where it is (normally unlimited) so later tasks can raise the
    # soft one again; pebble's wall-clock timeout is the backstop.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(time.process_time() + _cpu_seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    try:
        decision = _classify_fn(item, _settings, now)
        pickle.dumps(decision)      # fail here, worded, rather than in pebble's pipe
        return decision
    except MemoryError as exc:
        raise ClassifyCrashed(f"memory limit ({_memory_mb} MB) exceeded") from exc
    except ClassifyFailed:
        raise
    except Exception as exc:
        raise ClassifyFailed(_describe(exc)) from exc
    finally:
        # An idle worker must never be killed by the previous item's budget.
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
