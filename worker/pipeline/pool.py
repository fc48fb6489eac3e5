"""A bounded pool of sandboxed processes that run `classify` one message at a time.

CPython's email package has inputs that take minutes of CPU (quadratic header parsing)
or crash the interpreter, so one hostile message must not stall the event loop or the
service. Each message is classified in a worker process under three limits:

- CPU time: per task, RLIMIT_CPU's soft limit is set to the CPU the worker has used so
  far plus `cpu_seconds` (rounded up to whole seconds, as the kernel counts them). The
  kernel stops a runaway parse with SIGXCPU, even inside C code.
- Wall time: the pool kills a worker whose item runs longer than `wall_seconds` (a
  sleep, a lock, a worker stuck outside the CPU limit); a new worker takes its place.
- Memory: RLIMIT_AS caps each worker's address space at `memory_mb`, so an allocation
  beyond it raises MemoryError (or kills the worker) instead of swapping the host.

Each worker has a pipe of its own. The event loop itself writes an item to it and reads
the answer when the pipe becomes readable (`add_reader`), with no thread in between
(only an item too large for the pipe's buffer is written from a thread). This replaced
pebble, whose scheduler and result threads each had to be handed the GIL. In
bench/consumer.py, run alternately with pebble's pool, one corpus message alone took
2.4 and 2.6 ms (p50) from `classify` to its answer, against 3.0 and 3.3, and the pool
classified 393 to 678 corpus messages/s against 370 to 467.
A worker holds one item at a time, so a slow item never delays another that could run
elsewhere.

Lanes (issue 22): a burst of large messages, each within its CPU limit, used to take
every worker while ordinary bounces queued behind them (bench/attack_proof.py, hostile:
250 -> update went from milliseconds to seconds). Now an item is heavy when its raw bytes
exceed `heavy_bytes` (settings.consumer.heavy_bytes, 64 KiB), or once it has run for
`slow_seconds`; heavy items hold at most `workers - light_workers` workers (at least
one), and a waiting light item goes before a waiting heavy one. When items that turned
slow hold the workers kept for light ones, up to `light_workers` more processes start
for light items, so the pool runs at most `workers + light_workers` processes. Heavy
items are never starved: with none running, the next free worker is a heavy item's.

Workers are started with "forkserver", never "fork": the parent runs an asyncio loop
with helper threads, and forking a threaded process can copy a held lock into the child.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import pickle
import resource
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any

from handlers.model import Decision, Inbound

ClassifyFn = Callable[[Inbound, Any, datetime], Decision]
PARSER_NICENESS = 10        # added to the worker processes' nice value (see _init_worker)
INLINE_BYTES = 64 * 1024    # items up to this size are written to a worker's pipe by the loop itself
START_SECONDS = 60.0        # a new worker that has not said it is ready by then is given up


class ClassifyFailed(Exception):
    """Classifying one item failed. `str(exc)` is a short reason a reviewer understands."""


class ClassifyTimeout(ClassifyFailed):
    """The item hit the CPU or wall-time limit; the same bytes would hit it again."""


class ClassifyCrashed(ClassifyFailed):
    """The worker process died (memory limit, segfault, killed) while classifying the item."""


class _Worker:
    """One worker process, the parent's end of its pipe, and the item it is working on."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.answer: asyncio.Future[Decision] | None = None
        self.timer: asyncio.TimerHandle | None = None


class Ticket:
    """A worker slot held by one item, in the heavy or the light lane."""

    __slots__ = ("heavy", "released", "timer")

    def __init__(self, heavy: bool) -> None:
        self.heavy = heavy
        self.released = False
        self.timer: asyncio.TimerHandle | None = None


class Lanes:
    """Which waiting item may have a worker next (see the module's docstring, Lanes).

    Counts only: it never blocks the loop and holds no process. `promoted` counts light
    items that ran long enough to count as heavy.
    """

    def __init__(self, workers: int, light_workers: int) -> None:
        self.workers = workers
        # More than `workers` would let ordinary items keep a heavy one from ever starting.
        self.light_workers = min(light_workers, workers)
        self.heavy_cap = max(1, workers - self.light_workers)
        self.heavy = 0                          # running: heavy by size, or slow
        self.light = 0
        self.promoted = 0
        self._waiting: dict[bool, deque[asyncio.Future[Ticket]]] = {True: deque(), False: deque()}

    def waiting(self, heavy: bool) -> int:
        return sum(1 for f in self._waiting[heavy] if not f.done())

    def _fits(self, heavy: bool) -> bool:
        total = self.heavy + self.light
        if heavy:
            return self.heavy < self.heavy_cap and total < self.workers
        return total < self.workers or (self.light < self.light_workers
                                        and total < self.workers + self.light_workers)

    def _grant(self, heavy: bool) -> Ticket:
        if heavy:
            self.heavy += 1
        else:
            self.light += 1
        return Ticket(heavy)

    async def acquire(self, heavy: bool) -> Ticket:
        """A slot in `heavy`'s lane, once the rules allow it (FIFO within a lane)."""
        queue = self._waiting[heavy]
        if not self.waiting(heavy) and self._fits(heavy):
            return self._grant(heavy)
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())   # granted as the caller gave up
            raise

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        if ticket.timer is not None:
            ticket.timer.cancel()
        if ticket.heavy:
            self.heavy -= 1
        else:
            self.light -= 1
        self._wake()

    def promote(self, ticket: Ticket) -> None:
        """A light item has run `slow_seconds`: from now on it counts as heavy."""
        if ticket.released or ticket.heavy:
            return
        ticket.heavy = True
        self.light -= 1
        self.heavy += 1
        self.promoted += 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiters: a heavy one first only while no heavy item runs
        (so that heavy items always progress), then light ones, then heavy ones."""
        while True:
            for heavy in ((True, False) if self.heavy == 0 else (False, True)):
                queue = self._waiting[heavy]
                while queue and queue[0].done():        # callers that gave up
                    queue.popleft()
                if queue and self._fits(heavy):
                    queue.popleft().set_result(self._grant(heavy))
                    break
            else:
                return


class ClassifyPool:
    """Runs `classify_fn(item, context, now)` in a bounded pool of worker processes (the
    handlers.context.Context of `settings`, built once in each process).

    Limits default to `settings.parse` (workers, cpu_seconds, wall_seconds, memory_mb,
    light_workers, slow_seconds) and `settings.consumer.heavy_bytes`; the keyword
    arguments override them. `classify_fn` must be a picklable top-level
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
        light_workers: int | None = None,
        slow_seconds: float | None = None,
        heavy_bytes: int | None = None,
    ) -> None:
        parse = settings.parse
        self.workers = workers if workers is not None else parse.workers
        self.cpu_seconds = cpu_seconds if cpu_seconds is not None else parse.cpu_seconds
        self.wall_seconds = wall_seconds if wall_seconds is not None else parse.wall_seconds
        self.memory_mb = memory_mb if memory_mb is not None else parse.memory_mb
        self.slow_seconds = slow_seconds if slow_seconds is not None else parse.slow_seconds
        self.heavy_bytes = heavy_bytes if heavy_bytes is not None else settings.consumer.heavy_bytes
        self.lanes = Lanes(self.workers, light_workers if light_workers is not None else parse.light_workers)
        # Settings is a frozen pydantic model and pickles as is; each worker gets it once.
        self._initargs = (settings, classify_fn, self.cpu_seconds, self.memory_mb)
        # One item per worker; a burst waits here (self.lanes), on the loop, bytes and all.
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._starting = asyncio.Lock()                 # one process start at a time
        self._reaping: set[asyncio.Task[None]] = set()
        self._context = multiprocessing.get_context("forkserver")
        self._closed = False

    async def __aenter__(self) -> ClassifyPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def classify(self, item: Inbound, now: datetime) -> Decision:
        """Classify `item` in a worker process and return its Decision.

        Raises ClassifyTimeout when the CPU or wall-time limit was hit, ClassifyCrashed
        when the worker died or ran out of memory, and ClassifyFailed for anything else
        (an exception from the classifier, named by type, or a closed pool). A caller
        that is cancelled stops the worker working for it.
        """
        try:
            payload = pickle.dumps((item, now), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:                        # e.g. the item would not pickle
            raise ClassifyFailed(_describe(exc)) from None
        loop = asyncio.get_running_loop()
        ticket = await self.lanes.acquire(len(item.raw) > self.heavy_bytes)
        try:
            for attempt in (1, 2):
                worker = await self._take()
                if not ticket.heavy and ticket.timer is None:   # from now on, not counting a worker's start-up
                    ticket.timer = loop.call_later(self.slow_seconds, self.lanes.promote, ticket)
                answer = worker.answer = asyncio.get_running_loop().create_future()
                worker.timer = asyncio.get_running_loop().call_later(
                    self.wall_seconds, self._retire, worker,
                    ClassifyTimeout(f"wall time limit ({self.wall_seconds:g}s) exceeded"))
                try:
                    try:
                        await self._send(worker, payload)
                    except OSError as exc:              # it died while idle (or was killed since)
                        self._retire(worker, None, kill=False)
                        if answer.done():               # timed out or closed while writing
                            return await answer
                        answer.cancel()
                        if attempt == 2:
                            raise ClassifyCrashed(f"worker process gone: {_describe(exc)}") from None
                        continue
                    return await asyncio.shield(answer)
                except asyncio.CancelledError:
                    if not answer.done():               # our caller gave up: stop the work
                        self._retire(worker, None)
                        answer.cancel()
                    raise
            raise AssertionError("unreachable")
        finally:
            self.lanes.release(ticket)

    async def warm_up(self) -> None:
        """Start the worker processes and load the classifier in each, before real mail.

        Otherwise the first message waits for process start-up and imports (about half
        a second), and the first reply for the language model (another half second).
        The probe is a short reply, which goes through every reader. Failures here are
        ignored: real items report their own.
        """
        probe = Inbound.from_file(WARM_UP, "warm-up", datetime.now(timezone.utc))
        await asyncio.gather(*(self.classify(probe, probe.received_at) for _ in range(self.workers)),
                             return_exceptions=True)

    async def close(self) -> None:
        """Stop the worker processes; items still in flight fail with ClassifyFailed.

        Idempotent, and never waits for a running classification to finish.
        """
        if not self._closed:
            self._closed = True
            for worker in list(self._live):
                self._retire(worker, ClassifyFailed("classifier pool stopped while classifying"))
        if self._reaping:
            await asyncio.gather(*list(self._reaping), return_exceptions=True)

    async def _take(self) -> _Worker:
        """An idle worker, started if need be (a slot is held, so one is idle or may start)."""
        if self._closed:
            raise ClassifyFailed("classifier pool is closed")
        return self._idle.pop() if self._idle else await self._start()

    @staticmethod
    async def _send(worker: _Worker, payload: bytes) -> None:
        """Write the item to the worker. A small one goes straight into the pipe's buffer;
        a larger one is written from a thread, since a worker still starting up reads
        nothing yet, and the loop must not wait for it."""
        if len(payload) <= INLINE_BYTES:
            worker.conn.send_bytes(payload)
        else:
            await asyncio.to_thread(worker.conn.send_bytes, payload)

    async def _start(self) -> _Worker:
        """A new worker, once it has started up and says so. Its start-up (imports, the
        settings) is not counted in any item's wall time: on a busy machine it can take a
        good part of a second."""
        loop = asyncio.get_running_loop()
        async with self._starting:                      # one process start at a time
            if self._closed:
                raise ClassifyFailed("classifier pool is closed")
            parent, child = self._context.Pipe()
            process = self._context.Process(target=_serve, args=(child, *self._initargs), daemon=True,
                                            name="unsubd-parser")
            try:
                await asyncio.to_thread(process.start)  # the first start also starts the forkserver
            except Exception as exc:
                parent.close()
                raise ClassifyFailed(f"cannot start a parser process: {_describe(exc)}") from None
            finally:
                child.close()
        worker = _Worker(process, parent)
        ready = worker.answer = loop.create_future()
        self._live.add(worker)
        loop.add_reader(parent.fileno(), self._readable, worker)
        if self._closed:                                # closed while it started
            self._retire(worker, None)
            raise ClassifyFailed("classifier pool is closed")
        try:
            await asyncio.wait_for(asyncio.shield(ready), START_SECONDS)
        except asyncio.TimeoutError:
            self._retire(worker, None)
            raise ClassifyCrashed(f"parser process did not start within {START_SECONDS:g}s") from None
        except BaseException:                           # it died starting up, or we were cancelled
            self._retire(worker, None)
            raise
        return worker

    def _readable(self, worker: _Worker) -> None:
        """The loop's callback: the worker answered (or said it is ready), or its end of
        the pipe closed (it died)."""
        try:
            kind, value = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            self._retire(worker, None, kill=False)      # _reap words its death for its item
            return
        answer, worker.answer = worker.answer, None
        if worker.timer is not None:
            worker.timer.cancel()
        if answer is not None and not answer.done():
            if kind == "error":
                answer.set_exception(value)
            else:
                answer.set_result(value)
        if kind != "ready":                             # a new worker goes to its _start caller
            self._idle.append(worker)

    def _retire(self, worker: _Worker, error: ClassifyFailed | None, kill: bool = True) -> None:
        """Stop using `worker` (killing it, unless it is known to be dead already) and fail
        its item, if any, with `error`. Its process is reaped in the background."""
        if worker.timer is not None:
            worker.timer.cancel()
        if error is not None and worker.answer is not None and not worker.answer.done():
            worker.answer.set_exception(error)
        if worker not in self._live:
            return
        self._live.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        worker.conn.close()
        if kill:
            worker.process.kill()
        task = asyncio.get_running_loop().create_task(self._reap(worker))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _reap(self, worker: _Worker) -> None:
        """Wait for a retired worker to exit; if it died on its own with an item in hand,
        say how (its exit code) to the item's caller."""
        await asyncio.to_thread(worker.process.join, 10)
        answer = worker.answer
        if answer is not None and not answer.done():
            answer.set_exception(self._expired(worker.process.exitcode))
        try:
            worker.process.close()
        except ValueError:                              # still running after SIGKILL and 10 s
            pass

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

# What warm_up classifies in each process: a reply long enough for the language model.
WARM_UP = b"From: warm-up@localhost\nSubject: warm-up\n\nThis text only loads the readers and their language model.\n"

_settings: Any = None
_context: Any = None      # handlers.context.Context, built from _settings on first use
_classify_fn: ClassifyFn | None = None
_cpu_seconds: float = 0.0
_memory_mb: int = 0


def _serve(conn: Connection, settings: Any, classify_fn: ClassifyFn | None, cpu_seconds: float,
           memory_mb: int) -> None:
    """A worker process: set up, then answer one item at a time until the pipe closes.

    It first says ("ready", None); each answer is then ("ok", decision) or ("error",
    ClassifyFailed), pickled.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # Ctrl-C is for the parent, which stops us
    _init_worker(settings, classify_fn, cpu_seconds, memory_mb)
    try:
        _ensure_context()           # part of start-up, not of the first item's time limits
    except Exception:  # noqa: BLE001 - the first item tries again and reports why
        pass
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            item, now = pickle.loads(data)
            answer = _classify_in_worker(item, now)
        except ClassifyFailed as exc:
            answer = pickle.dumps(("error", exc))
        except MemoryError:                              # unpickling the item
            answer = pickle.dumps(("error", _out_of_memory()))
        except Exception as exc:
            answer = pickle.dumps(("error", ClassifyFailed(_describe(exc))))
        try:
            conn.send_bytes(answer)
        except OSError:
            return


def _init_worker(settings: Any, classify_fn: ClassifyFn | None, cpu_seconds: float, memory_mb: int) -> None:
    """Keep the settings, cap the address space, and never dump core.

    SIGXCPU's default action dumps core; a 1 GB core file per hostile message would be
    worse than the message itself.
    """
    global _settings, _classify_fn, _cpu_seconds, _memory_mb
    _settings, _classify_fn, _cpu_seconds, _memory_mb = settings, classify_fn, cpu_seconds, memory_mb
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The language model uses numpy: one BLAS thread per process, so its start-up does not
    # reserve address space per core against memory_mb (the pool is the parallelism).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    # Parsing is batch work; the event loop (SMTP replies, database round trips, confirms)
    # is latency work. At a lower priority the parsers still get every idle cycle, but the
    # loop's threads no longer queue behind them for a core each time they wake.
    os.nice(PARSER_NICENESS)
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _ensure_context() -> None:
    """Build the handlers' Context once per parser process (not in the parent: it never
    needs the classifier's code)."""
    global _context
    if _context is None:
        from handlers.classify import warm_up
        from handlers.context import Context

        _context = Context.from_settings(_settings)
        try:
            warm_up()
        except MemoryError:
            pass        # memory_mb too small for the language model: a reply that needs it says so itself


def _classify_in_worker(item: Inbound, now: datetime) -> bytes:
    """Run the classifier on one item under a fresh CPU budget; its pickled answer, or a
    worded ClassifyFailed."""
    global _classify_fn
    try:
        if _classify_fn is None:
            # Imported here, not in the parent: the parent never needs the email code.
            from handlers.classify import classify

            _classify_fn = classify
        _ensure_context()
    except Exception as exc:
        raise ClassifyFailed(f"cannot load the classifier: {_describe(exc)}") from exc

    # The hard limit stays where it is (normally unlimited) so later tasks can raise the
    # soft one again; the pool's wall-time limit is the backstop.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(time.process_time() + _cpu_seconds)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    try:
        decision = _classify_fn(item, _context, now)
        return pickle.dumps(("ok", decision), protocol=pickle.HIGHEST_PROTOCOL)   # a failure here is worded
    except MemoryError as exc:
        raise _out_of_memory() from exc
    except ClassifyFailed:
        raise
    except Exception as exc:
        raise ClassifyFailed(_describe(exc)) from exc
    finally:
        # An idle worker must never be killed by the previous item's budget.
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def _out_of_memory() -> ClassifyCrashed:
    return ClassifyCrashed(f"memory limit ({_memory_mb} MB) exceeded")
