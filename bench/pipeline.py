"""Pipeline benchmark: SMTP accept rate and latency from 250 to a delivered update.

For each mode it starts `unsubd serve` as subprocesses and measures. Embedded mode
is one process with SQLite and the in-database queue. Production mode is PostgreSQL
and RabbitMQ, with listeners (`--role smtp,http,relay`) and a consumer (`--role
consumer`) in separate processes, as the README's Production section deploys them.
It measures:

- accept: real corpus messages (../shared/corpus) sent over SMTP by N concurrent
  sessions as fast as they go, as messages/s, beside the consumer (which then works
  through the backlog). Each message sent carries a header field of its own, so none
  is a repeat that the consumer would recognise and pass over. A bare aiosmtpd server
  that only answers 250 is measured in the same run: each of --accept-rounds rounds
  runs the bare server and then unsubd, and the figures are the median rate and the
  median of the rounds' ratios, since a run of a few seconds varies by a third from
  one run to the next. Each round starts once the work of the one before is done.
  Each round, bare and ours, also says where the machine's CPU went: milliseconds per
  message for each unsubd process (and its parser workers), the load generator,
  RabbitMQ, PostgreSQL and the kernel's threads, and how busy the two CPUs were. A
  round with the CPUs near fully busy was bound by CPU, and the parts say by whose.
- accept at 64 KB: --big-messages bounces of 64 KB each, once (the bare server too,
  at the start of the run).
- accept, listener alone (production): the accept rounds again on a listener with no
  consumer on the machine, so the cost of the durable enqueue shows apart from the
  CPU that a consumer beside it takes.
  In production each accept figure also gives the listener's mean batch: items per
  message it published to the inbound queue.
  Each accept phase starts once the work of the phase before it is done (inbound queue
  and outbox empty, the servers quiet), so it does not compete with the previous
  phase's backlog.
- latency: bounces for distinct addresses offered at fixed rates (--rates). For each
  one it takes the time from the 250 to the moment its update reaches a consumer: a
  queue bound to `unsubd.updates` in production, the /v1/updates feed in embedded
  mode. It gives p50, p99 and the maximum per rate.
- end to end: --e2e-messages bounces for distinct addresses sent by N sessions as fast
  as they go; messages/s from the first send to the last update seen (SMTP in to
  update out, the whole box).

Prints the figures and writes bench/results/pipeline.json.

    .venv/bin/python -m bench.pipeline [--modes embedded,production] [--sessions 20]
        [--accept-messages 2000] [--big-messages 500] [--rates 100,200]
        [--latency-messages 1000] [--e2e-messages 3000] [--accept-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "bench" / "results" / "logs"     # the servers' stderr, one file per process
QUIET_SECONDS, QUIET_SHARE = 1.0, 0.05    # settled: the servers used at most 5% of a core for a second
TICK = os.sysconf("SC_CLK_TCK")           # the unit of the CPU times in /proc
RABBITMQ_COMMANDS = {"beam.smp", "erl_child_setup", "epmd", "inet_gethost"}   # the broker's processes
CORPUS = Path(os.environ.get("UNSUBD_CORPUS", REPO.parent / "shared" / "corpus"))
RABBIT = os.environ.get("UNSUBD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
BOUNCES = "bounces@mail.example.org"


def corpus_messages() -> list[tuple[bytes, str]]:
    """(bytes, recipient) for every corpus message, addressed where it would arrive."""
    out = []
    for path in sorted((CORPUS / "mail").glob("*.eml")):
        out.append((path.read_bytes(), "reply@mail.example.org"))
    for path in sorted((CORPUS / "bounces" / "sisimai").rglob("*.eml")):
        out.append((path.read_bytes(), BOUNCES))
    if not out:
        sys.exit(f"no corpus messages under {CORPUS} (set UNSUBD_CORPUS to the shared corpus)")
    return out


def bounce(recipient: str) -> bytes:
    b = uuid.uuid4().hex[:12]
    return (
        "From: MAILER-DAEMON@mx.bench.example\r\nTo: bounces@mail.example.org\r\n"
        f"Subject: Undelivered\r\nMessage-ID: <{b}@mx.bench.example>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{b}"\r\n\r\n'
        f"--{b}\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
        f"--{b}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.bench.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 unknown user\r\n\r\n--{b}--\r\n"
    ).encode()


def big_bounce(recipient: str, size: int = 64 * 1024) -> bytes:
    """A bounce of `size` bytes: the returned original carries the bulk, as real ones do."""
    raw = bounce(recipient)
    filler = ("Returned text line for the size benchmark, nothing to see here. " * 2)[:76] + "\r\n"
    body = filler * max(0, (size - len(raw)) // len(filler))
    boundary = re.search(rb'boundary="([^"]+)"', raw).group(1)
    closing = raw.rindex(b"--" + boundary + b"--")
    part = b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\n" + body.encode()
    return raw[:closing] + part + raw[closing:]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


_SENT = itertools.count(1)       # numbers the messages accept_rate sends, across runs


def distinct(raw: bytes, n: int) -> bytes:
    """`raw` with a header field of its own (X-Bench-Id: n) at the end of its header.

    The corpus is smaller than a run, and a consumer recognises a message it has seen
    (same bytes, same envelope) and does little with it: without this, every round
    after the first would measure a consumer that has almost nothing to do."""
    eol = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    field = b"X-Bench-Id: %d" % n
    end = raw.find(eol + eol)
    if end < 0:                                  # a header and no body
        return raw.rstrip(b"\r\n") + eol + field + eol
    return raw[:end] + eol + field + raw[end:]


def accept_rate(port: int, messages: list[tuple[bytes, str]], sessions: int, count: int) -> dict[str, Any]:
    """Send `count` messages over `sessions` persistent SMTP sessions; messages/s that got 250."""
    ok = deferred = 0
    lock = threading.Lock()
    per_session = [(distinct(raw, next(_SENT)), rcpt)
                   for raw, rcpt in (messages[(i * 7919) % len(messages)] for i in range(count))]
    chunks = [per_session[i::sessions] for i in range(sessions)]

    def run(chunk: list[tuple[bytes, str]]) -> None:
        nonlocal ok, deferred
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
            for raw, rcpt in chunk:
                try:
                    c.sendmail("", [rcpt], raw)
                    with lock:
                        ok += 1
                except smtplib.SMTPResponseException:
                    with lock:
                        deferred += 1
                    c.rset()

    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as ex:
        list(ex.map(run, chunks))
    seconds = time.perf_counter() - start
    return {"messages": count, "accepted": ok, "refused": deferred, "seconds": round(seconds, 2),
            "per_s": round(ok / seconds, 1)}


class BareServer:
    """aiosmtpd that answers 250 to everything and stores nothing: the ceiling.

    A subprocess, like unsubd, so neither shares a GIL with the load generator.
    """

    def __enter__(self) -> BareServer:
        self.proc = subprocess.Popen([sys.executable, __file__, "--bare-server"], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def serve_bare() -> None:
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    class LongLines(SMTP):
        line_length_limit = 64 * 1024          # as unsubd's listener: the same messages pass both

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: LongLines(Handler(), data_size_limit=None), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Serve:
    """`unsubd serve` processes: one with every role, or listeners and workers apart."""

    def __init__(self, env: dict[str, str], split: bool, listener_only: bool = False) -> None:
        roles = [["--role", "smtp,http,relay"], ["--role", "consumer"]] if split else [[]]
        if listener_only:
            roles = roles[:1]
        self.procs = []
        # Each process's log (stderr) is kept, so that a run that fails can be read after.
        LOGS.mkdir(parents=True, exist_ok=True)
        # Each process's name: its roles ("smtp-http-relay", "consumer"), or "all".
        self.names = ["-".join(extra[1:]).replace(",", "-") or "all" for extra in roles]
        self.logs = [LOGS / f"serve-{name}.log" for name in self.names]
        for extra, log_path in zip(roles, self.logs):
            with log_path.open("w") as log_file:
                proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "serve", *extra], cwd=REPO,
                                        env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=log_file, text=True)
            line = proc.stdout.readline()
            self.procs.append(proc)
            if m := re.search(r"smtp \('[^']+', (\d+)\), http \('[^']+', (\d+)\)", line):
                self.smtp_port, self.http_port = int(m.group(1)), int(m.group(2))

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


class FeedWatcher(threading.Thread):
    """Embedded mode: follows /v1/updates and notes when each address's update appears."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.seen, self.stop_flag, self.after = port, {}, False, 0

    def run(self) -> None:
        while not self.stop_flag:
            # wait=: the server holds an empty answer until the next update is published,
            # as a real consumer of the feed would ask (no polling loop on the server).
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/updates?after={self.after}"
                                        f"&limit=1000&wait=2", timeout=10) as r:
                page = json.loads(r.read())
            now = time.time()
            for u in page["updates"]:
                self.seen.setdefault(u["address"], now)
            self.after = page["next"]


class AmqpWatcher(threading.Thread):
    """Production mode: a consumer bound to the updates exchange, in its own loop."""

    def __init__(self, exchange: str) -> None:
        super().__init__(daemon=True)
        self.exchange, self.seen, self.ready, self.stop_flag = exchange, {}, threading.Event(), False

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=500)
            x = await ch.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await ch.declare_queue(exclusive=True, auto_delete=True)
            await q.bind(x, routing_key="#")

            async def on(msg: Any) -> None:
                self.seen.setdefault(json.loads(msg.body)["address"], time.time())
                await msg.ack()

            await q.consume(on)
            self.ready.set()
            while not self.stop_flag:
                await asyncio.sleep(0.05)


def latency(port: int, watcher: Any, rate: float, count: int, tag: str) -> dict[str, Any]:
    accepted: dict[str, float] = {}
    interval = 1.0 / rate
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            rcpt = f"lat-{tag}-{i}@kommun-vast.example"
            c.sendmail("", [BOUNCES], bounce(rcpt))
            accepted[rcpt] = time.time()
    deadline = time.time() + 120
    while time.time() < deadline and not all(a in watcher.seen for a in accepted):
        time.sleep(0.05)
    lat = [(watcher.seen[a] - t) * 1000 for a, t in accepted.items() if a in watcher.seen]
    return {"offered_rate_per_s": rate, "messages": count, "delivered": len(lat),
            "p50_ms": round(pct(lat, 50), 1) if lat else None, "p99_ms": round(pct(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None}


def end_to_end(port: int, watcher: Any, sessions: int, count: int, tag: str) -> dict[str, Any]:
    """`count` bounces for distinct addresses, as fast as `sessions` go; until every update is seen."""
    rcpts = [f"e2e-{tag}-{i}@kommun-vast.example" for i in range(count)]
    messages = [(bounce(r), BOUNCES) for r in rcpts]
    start = time.time()
    sent = accept_rate(port, messages, sessions, count)
    deadline = time.time() + 300
    while time.time() < deadline and not all(r in watcher.seen for r in rcpts):
        time.sleep(0.02)
    seen = [watcher.seen[r] for r in rcpts if r in watcher.seen]
    seconds = (max(seen) - start) if seen else None
    return {"messages": count, "accepted": sent["accepted"], "updates_seen": len(seen),
            "smtp_per_s": sent["per_s"], "seconds": round(seconds, 2) if seconds else None,
            "per_s": round(len(seen) / seconds, 1) if seconds else None}


def gauges(server: Serve) -> dict[str, str]:
    """The listener's /metrics, by name without the `unsubd_` prefix."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"/metrics answered {exc.code}; the servers' logs: "
                           + ", ".join(str(p) for p in server.logs)) from exc
    return {k.removeprefix("unsubd_"): v for k, v in (line.split() for line in text.splitlines() if line.strip())}


def measured_accept(server: Serve, messages: list[tuple[bytes, str]], sessions: int, count: int,
                    bare_per_s: float | None) -> dict[str, Any]:
    """accept_rate, as a ratio to the bare server too; in production also the listener's
    mean batch (items per inbound message published) during the run."""
    before = gauges(server)
    acc = accept_rate(server.smtp_port, messages, sessions, count)
    acc["ratio_to_bare"] = round(acc["per_s"] / bare_per_s, 2) if bare_per_s else None
    acc.update(mean_batch(before, gauges(server)))
    return acc


def mean_batch(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    """Production: the listener's items per inbound message published between two readings."""
    if "inbound_published_messages_total" not in after:
        return {}
    sent = int(after["inbound_published_messages_total"]) - int(before["inbound_published_messages_total"])
    items = int(after["inbound_published_items_total"]) - int(before["inbound_published_items_total"])
    return {"mean_batch": round(items / sent, 1) if sent else None}


def alternating_accept(server: Serve, bare: BareServer, messages: list[tuple[bytes, str]], args: argparse.Namespace,
                       between: Any = None) -> dict[str, Any]:
    """Accept runs on `server`, each right after one on the bare server: each round's
    ratio and their median. A run of a few seconds on a shared 2-core machine varies by
    a third from one run to the next, so a ratio to a bare figure taken minutes earlier
    says little. `between()` runs before every round but the first (to let a backlog drain).

    Each round also says where the machine's CPU went (`CpuUse`), for the bare server's
    run and for ours: the milliseconds per message of each part and how busy the CPUs
    were; the summary has the median of each part over the rounds."""
    rounds = []
    before = gauges(server)
    for i in range(args.accept_rounds):
        if between is not None and i:
            between()
        with CpuUse({bare.proc.pid: "bare server"}) as bare_cpu:
            bare_per_s = accept_rate(bare.port, messages, args.sessions, args.accept_messages)["per_s"]
        with CpuUse(server_parts(server)) as cpu:       # read each round: a parser may have been replaced
            ours = accept_rate(server.smtp_port, messages, args.sessions, args.accept_messages)
        rounds.append({"bare_per_s": bare_per_s, "per_s": ours["per_s"], "refused": ours["refused"],
                       "ratio_to_bare": round(ours["per_s"] / bare_per_s, 2),
                       "bare_cpu_busy": bare_cpu.busy_share, "cpu_busy": cpu.busy_share,
                       "bare_cpu_ms_per_message": bare_cpu.per_message(args.accept_messages),
                       "cpu_ms_per_message": cpu.per_message(args.accept_messages)})
    return {"messages": args.accept_messages, "rounds": rounds,
            "per_s": statistics.median(r["per_s"] for r in rounds),
            "ratio_to_bare": statistics.median(r["ratio_to_bare"] for r in rounds),
            **mean_batch(before, gauges(server)),
            "bare_cpu_busy": statistics.median(r["bare_cpu_busy"] for r in rounds),
            "cpu_busy": statistics.median(r["cpu_busy"] for r in rounds),
            "bare_cpu_ms_per_message": median_parts([r["bare_cpu_ms_per_message"] for r in rounds]),
            "cpu_ms_per_message": median_parts([r["cpu_ms_per_message"] for r in rounds])}


def median_parts(readings: list[dict[str, float]]) -> dict[str, float]:
    """Each part's median over the readings (a part missing from one counts as 0 there)."""
    names = {name for r in readings for name in r}
    med = {name: round(statistics.median(r.get(name, 0.0) for r in readings), 3) for name in names}
    return dict(sorted(med.items(), key=lambda kv: (kv[0] in ("sum", "machine"), -kv[1])))


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the parser workers are grandchildren, via the forkserver)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def cpu_seconds(server: Serve) -> float:
    """CPU time used so far by the server's processes and their parser workers."""
    ticks = cpu_ticks()
    return sum(ticks[pid][2] for proc in server.procs for pid in tree(proc.pid) if pid in ticks) / TICK


def cpu_ticks() -> dict[int, tuple[str, int, int, int]]:
    """Every process on the machine: pid -> (command name, parent pid, CPU ticks used so
    far, user and system, all its threads; start time, which tells a reused pid apart)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue                         # gone since the listing
        comm, _, rest = raw.partition("(")[2].rpartition(")")
        fields = rest.split()                # state, ppid, ..., utime (11), stime (12), starttime (19)
        out[int(entry.name)] = (comm, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]))
    return out


def machine_ticks() -> tuple[int, int]:
    """All CPUs' ticks so far from /proc/stat: (busy, total); idle and iowait are not busy."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks[:8])                   # guest time is already inside user and nice
    return total - ticks[3] - ticks[4], total


class CpuUse:
    """Where the machine's CPU went while a block ran: the ticks of each part of the box,
    as milliseconds per message, and the share of the time the CPUs were busy.

    `parts` names known processes (each `unsubd serve` and "<name> children" for its
    parser workers, the bare server); the bench's own process is the load generator (in
    production with the thread that watches for updates). The rest is put by command
    name: RabbitMQ, PostgreSQL, the kernel's own threads (children of kthreadd), other.
    A busy share near 1 says the run was bound by CPU, not by waiting: then the parts
    show what would have to shrink."""

    def __init__(self, parts: dict[int, str]) -> None:
        self.parts = {os.getpid(): "load generator", **parts}

    def part(self, pid: int, comm: str, ppid: int) -> str:
        if pid in self.parts:
            return self.parts[pid]
        if comm in RABBITMQ_COMMANDS:
            return "rabbitmq"
        if comm == "postgres":
            return "postgresql"
        return "kernel" if 2 in (pid, ppid) else "other"

    def __enter__(self) -> CpuUse:
        self.before, self.machine_before = cpu_ticks(), machine_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        after, (busy, total) = cpu_ticks(), machine_ticks()
        self.ticks: dict[str, int] = {}
        for pid, (comm, ppid, used, started) in after.items():
            # A process that started during the block counts from zero; one that ended is
            # missed (its ticks go to a parent only once reaped), which the benches' are not.
            # (Not by name: a kernel worker's name changes with the work it does.)
            earlier = self.before.get(pid)
            used -= earlier[2] if earlier and earlier[3] == started else 0
            if used > 0:
                name = self.part(pid, comm, ppid)
                self.ticks[name] = self.ticks.get(name, 0) + used
        self.busy_ticks = busy - self.machine_before[0]
        total -= self.machine_before[1]
        self.busy_share = round(self.busy_ticks / total, 2) if total else None

    def per_message(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per message for each part, the largest first; their sum; and
        the machine's busy time per message, which the sum should come near (interrupts are
        in the machine's figure and in no process's)."""
        per = {name: round(t / TICK * 1000 / count, 3)
               for name, t in sorted(self.ticks.items(), key=lambda kv: -kv[1])}
        return {**per, "sum": round(sum(per.values()), 3), "machine": round(self.busy_ticks / TICK * 1000 / count, 3)}


def server_parts(server: Serve) -> dict[int, str]:
    """The server's processes by name, and each one's descendants as "<name> children"."""
    return {pid: name if pid == proc.pid else f"{name} children"
            for proc, name in zip(server.procs, server.names) for pid in tree(proc.pid)}


def settle(server: Serve, inbound_queue: str | None, limit: float = 300) -> float:
    """Wait until the work sent so far is done: nothing waiting in the inbound queue (the
    embedded table, or the RabbitMQ queue with its unacked deliveries), nothing in the
    outbox, and the server's processes quiet. A pipeline phase then measures itself, not
    the one before it; the memory bench samples a process at rest. Returns the seconds
    waited.

    The quiet check is needed: `rabbitmqctl list_queues` reads statistics the broker
    refreshes every few seconds, so it can say empty while a consumer still works through
    a backlog, and a bare-server round run then measured a machine busy with it."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        now = gauges(server)
        waiting = int(now.get("inbound_pending", 0)) + int(now.get("inbound_processing", 0))
        if inbound_queue is not None:
            listed = subprocess.run(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "messages"],
                                    capture_output=True, text=True, timeout=60).stdout
            waiting += sum(int(n) for name, n in (line.split() for line in listed.splitlines() if line.strip())
                           if name in (inbound_queue, f"{inbound_queue}.bulk"))
        if waiting == 0 and int(now.get("outbox_backlog", 0)) == 0:
            used = cpu_seconds(server)
            time.sleep(QUIET_SECONDS)
            if cpu_seconds(server) - used <= QUIET_SECONDS * QUIET_SHARE:
                break
            continue
        time.sleep(0.5)
    return round(time.monotonic() - start, 1)


def make_pg_database() -> str:
    name = f"unsubd_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'CREATE DATABASE "{name}"'], check=True)
    url = PG + name
    subprocess.run([sys.executable, "-m", "worker.cli.main", "db", "upgrade"], cwd=REPO, check=True,
                   env={**os.environ, "UNSUBD_DATABASE_URL": url}, capture_output=True)
    return name


def drop_pg_database(name: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                   check=False)


def deployment_env(mode: str, sessions: int, tag: str) -> tuple[dict[str, str], str | None]:
    """The `unsubd serve` settings for a mode, on a fresh database (and, in production,
    queue and exchange names of its own); returns them and the PostgreSQL database's name."""
    tmp = Path(tempfile.mkdtemp(prefix=f"unsubd-{tag}-"))
    env = {"UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0", "UNSUBD_LOG_LEVEL": "WARNING",
           "UNSUBD_CONFIG": str(REPO / "config" / "example.toml"),
           "UNSUBD_SMTP__MAX_SESSIONS": str(sessions + 10),
           # The load generator is one client on loopback: free of the per-client flood limits.
           "UNSUBD_SMTP__EXEMPT_CLIENTS": '["127.0.0.1/32"]'}
    if mode == "embedded":
        env["UNSUBD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        return env, None
    pg_name = make_pg_database()
    p = f"{tag}{uuid.uuid4().hex[:6]}"
    env.update({"UNSUBD_DATABASE_URL": PG + pg_name, "UNSUBD_AMQP_URL": RABBIT,
                "UNSUBD_AMQP__INBOUND_QUEUE": f"{p}.inbound", "UNSUBD_AMQP__DEAD_LETTER_EXCHANGE": f"{p}.dlx",
                "UNSUBD_AMQP__DEAD_LETTER_QUEUE": f"{p}.dlq", "UNSUBD_AMQP__UPDATES_EXCHANGE": f"{p}.updates"})
    return env, pg_name


def clean_up(env: dict[str, str], pg_name: str | None) -> None:
    """Drop what `deployment_env` made: the PostgreSQL database, and the durable queues
    and exchanges (each run's names are its own, so they would otherwise pile up)."""
    if pg_name:
        drop_pg_database(pg_name)
    if "UNSUBD_AMQP_URL" in env:
        asyncio.run(_delete_broker_names(env))


async def _delete_broker_names(env: dict[str, str]) -> None:
    import aio_pika

    conn = await aio_pika.connect(env["UNSUBD_AMQP_URL"])
    async with conn:
        channel = await conn.channel()
        for key in ("UNSUBD_AMQP__INBOUND_QUEUE", "UNSUBD_AMQP__DEAD_LETTER_QUEUE"):
            await channel.queue_delete(env[key])
        await channel.queue_delete(env["UNSUBD_AMQP__INBOUND_QUEUE"] + ".bulk")     # heavy items (worker/queue/amqp.py)
        for key in ("UNSUBD_AMQP__DEAD_LETTER_EXCHANGE", "UNSUBD_AMQP__UPDATES_EXCHANGE"):
            await channel.exchange_delete(env[key])


def big_messages(count: int, tag: str) -> list[tuple[bytes, str]]:
    return [(big_bounce(f"big-{tag}-{i}@kommun-vast.example"), BOUNCES) for i in range(count)]


def run_mode(mode: str, args: argparse.Namespace, messages: list[tuple[bytes, str]],
             bare: dict[str, Any]) -> dict[str, Any]:
    env, pg_name = deployment_env(mode, args.sessions, "bench")
    server = Serve(env, split=(mode == "production"))
    watcher: Any = None
    try:
        if mode == "embedded":
            watcher = FeedWatcher(server.http_port)
        else:
            watcher = AmqpWatcher(env["UNSUBD_AMQP__UPDATES_EXCHANGE"])
        watcher.start()
        if mode == "production":
            watcher.ready.wait(30)
        out: dict[str, Any] = {"latency": [latency(server.smtp_port, watcher, rate, args.latency_messages,
                                                   f"{mode}{rate:g}") for rate in args.rates]}
        if args.e2e_messages:
            out["end_to_end"] = end_to_end(server.smtp_port, watcher, args.sessions, args.e2e_messages, mode)
        inbound = env.get("UNSUBD_AMQP__INBOUND_QUEUE")
        settle(server, inbound)
        with BareServer() as bare_server:
            out["accept"] = alternating_accept(server, bare_server, messages, args,
                                               between=lambda: settle(server, inbound))
        if args.big_messages:
            settle(server, inbound)
            out["accept_64k"] = measured_accept(server, big_messages(args.big_messages, mode), args.sessions,
                                                args.big_messages, bare.get("big_per_s"))
    finally:
        if watcher is not None:
            watcher.stop_flag = True
        server.stop()
        clean_up(env, pg_name)
    if mode == "production":
        out["accept_listener_alone"] = listener_alone(args, messages)
    return out


def listener_alone(args: argparse.Namespace, messages: list[tuple[bytes, str]]) -> dict[str, Any]:
    """Production accept with no consumer on the box: what the durable enqueue itself
    costs, apart from the CPU a consumer beside it takes (the queue just fills)."""
    env, pg_name = deployment_env("production", args.sessions, "alone")
    server = Serve(env, split=True, listener_only=True)
    try:
        with BareServer() as bare_server:
            return alternating_accept(server, bare_server, messages, args)
    finally:
        server.stop()
        clean_up(env, pg_name)


def main() -> int:
    if "--bare-server" in sys.argv:
        serve_bare()
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="embedded,production")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--accept-messages", type=int, default=2000)
    ap.add_argument("--rates", default="100,200", help="offered rates for the latency runs, messages/s")
    ap.add_argument("--latency-messages", type=int, default=1000)
    ap.add_argument("--big-messages", type=int, default=500, help="64 KB messages for the accept run (0: none)")
    ap.add_argument("--e2e-messages", type=int, default=3000, help="bounces for the end-to-end run (0: none)")
    ap.add_argument("--accept-rounds", type=int, default=3,
                    help="rounds of each accept run (beside a consumer; production: also the listener alone), "
                         "each right after a bare-server round")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    messages = corpus_messages()
    with BareServer() as bare_server:
        bare = accept_rate(bare_server.port, messages, args.sessions, args.accept_messages)
        if args.big_messages:
            bare["big_per_s"] = accept_rate(bare_server.port, big_messages(args.big_messages, "bare"),
                                            args.sessions, args.big_messages)["per_s"]
    result: dict[str, Any] = {
        "bench": "pipeline", "sessions": args.sessions, "corpus_messages": len(messages),
        "mean_message_bytes": round(sum(len(m) for m, _ in messages) / len(messages)),
        "bare_aiosmtpd": bare,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for mode in args.modes.split(","):
        result[mode] = run_mode(mode, args, messages, bare)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
