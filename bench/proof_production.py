"""Issue 22's kills and outages in production mode: PostgreSQL and RabbitMQ, each role of
`unsubd serve` in its own process, as a new deployment runs it (part of bench/attack_proof.py).

    python -m bench.proof_production                 # bounded: 1 kill of each role, 5 s outages
    python -m bench.proof_production --kills 15 --messages 600 --outage 30    # the long run

Three processes on loopback: the listeners (`--role smtp,http`), the consumer (`--role
consumer`, with its parser processes) and the relay (`--role relay`), against a fresh
PostgreSQL database and queue and exchange names of their own. They reach PostgreSQL and
RabbitMQ through TCP proxies (tests/support/outage_support.TcpProxy), so an outage is a
cut of one proxy: every connection dropped, new ones refused, for `--outage` seconds,
while the services themselves (shared with anything else on the machine) keep running.

Bounces stream in over SMTP. Every few messages one role is SIGKILLed (its whole process
group) and started again, round robin, until each has died `--kills` times; one database
outage and one broker outage fall in the stream. A message the sender saw no 250 for is
sent again later with the same bytes, as an MTA would. Counted at the end, from the
database and the broker:

    accepted        distinct messages answered 250
    applied         accepted messages whose recipient is suppressed
    lost            accepted, not applied
    duplicated      events beyond one per item, outbox rows beyond one per (address, key)
    sequence_gaps   contacts whose update sequence is not 1..n
    unpublished     outbox rows never published
    parked          messages in the dead-letter queue (an outage must park none)
    redelivered     updates the broker delivered more than once (at-least-once publishing:
                    a relay killed between publish and mark publishes again; consumers
                    drop them by the contact's sequence number)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from bench.attack_proof import BOUNCES, EXAMPLE_TOML, REPO, dsn, pct, send
from bench.pipeline import PG, RABBIT, drop_pg_database, make_pg_database
from tests.support.outage_support import TcpProxy

ROLE_NAMES = ("smtp,http", "consumer", "relay")
FAST = {"UNSUBD_CONSUMER__RETRY_BASE": "0.05", "UNSUBD_CONSUMER__RETRY_MAX": "0.5",
        "UNSUBD_CONSUMER__OUTAGE_BACKOFF_BASE": "0.2", "UNSUBD_CONSUMER__OUTAGE_BACKOFF_MAX": "2",
        "UNSUBD_RELAY__HANDOFF_LEASE": "1"}


class Proxies:
    """The PostgreSQL and RabbitMQ proxies, on an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pg = self._run(TcpProxy("127.0.0.1", 5432).start())
        self.mq = self._run(TcpProxy("127.0.0.1", 5672).start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def outage(self, proxy: TcpProxy, seconds: float) -> None:
        """Cut `proxy` now and restore it after `seconds`, without waiting."""
        self._run(proxy.cut())
        self.loop.call_soon_threadsafe(lambda: self.loop.call_later(
            seconds, lambda: asyncio.ensure_future(proxy.restore())))

    def close(self) -> None:
        for proxy in (self.pg, self.mq):
            self._run(proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Role:
    """One `unsubd serve --role R` process in its own process group."""

    def __init__(self, roles: str, env: dict[str, str], logs: Path) -> None:
        self.roles, self.env, self.logs = roles, env, logs
        self.proc: subprocess.Popen[str] | None = None
        self.smtp_port = 0
        self.starts = 0

    def start(self) -> Role:
        self.starts += 1
        log_path = self.logs / f"{self.roles.replace(',', '-')}-{self.starts}.log"
        with log_path.open("w") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "serve", "--role", self.roles],
                                         cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                         start_new_session=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "unsubd serving" not in line:
            self.kill()
            raise RuntimeError(f"serve --role {self.roles} did not start: {line!r} (see {log_path})")
        if m := re.search(r"smtp \('[^']+', (\d+)\)", line):
            self.smtp_port = int(m.group(1))
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class UpdateWatcher(threading.Thread):
    """A queue bound to the updates exchange (directly, not through the proxy): every
    update the broker delivers, counted per (routing key, address, sequence)."""

    def __init__(self, exchange: str) -> None:
        super().__init__(daemon=True)
        self.exchange = exchange
        self.seen: dict[tuple[str, str, int], int] = {}
        self.ready = threading.Event()
        self.stop_flag = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            x = await ch.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await ch.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(x, routing_key="#")

            async def on(msg: Any) -> None:
                body = json.loads(msg.body)
                key = (msg.routing_key or "", str(body.get("address")), int(body.get("sequence") or 0))
                self.seen[key] = self.seen.get(key, 0) + 1
                await msg.ack()

            await queue.consume(on)
            self.ready.set()
            while not self.stop_flag.is_set():
                await asyncio.sleep(0.05)


def _pg(name: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=name)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(run())


def _dead_lettered(queue: str) -> int:
    import aio_pika

    async def run() -> int:
        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            try:
                q = await ch.declare_queue(queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0
            return int(q.declaration_result.message_count)
    return asyncio.run(run())


async def _delete_names(names: dict[str, str]) -> None:
    import aio_pika

    conn = await aio_pika.connect(RABBIT)
    async with conn:
        ch = await conn.channel()
        for queue in (names["inbound"], names["inbound"] + ".bulk", names["dlq"]):
            await ch.queue_delete(queue)
        for exchange in (names["dlx"], names["updates"]):
            await ch.exchange_delete(exchange)


def ledger(pg_name: str) -> dict[str, Any]:
    """What the database holds: suppressed addresses, duplicates, gaps, unpublished rows."""
    suppressed = {a for (a,) in _pg(pg_name, "SELECT address FROM suppression")}
    (extra_events,), = _pg(pg_name, "SELECT count(*) - count(DISTINCT item_id) FROM event")
    keys = _pg(pg_name, "SELECT routing_key, payload->>'address' FROM outbox")
    seqs: dict[int, list[int]] = {}
    for contact, seq in _pg(pg_name, "SELECT contact_id, sequence FROM outbox ORDER BY id"):
        seqs.setdefault(contact, []).append(int(seq))
    gaps = sum(1 for s in seqs.values() if sorted(s) != list(range(1, len(s) + 1)))
    (unpublished,), = _pg(pg_name, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
    (outbox,), = _pg(pg_name, "SELECT count(*) FROM outbox")
    return {"suppressed": suppressed, "duplicated": extra_events + len(keys) - len(set(keys)),
            "sequence_gaps": gaps, "unpublished": unpublished, "outbox": outbox}


def attack_roles(work: Path, kills: int, messages: int, outage: float,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The production run; its counters (see the module docstring)."""
    pg_name = make_pg_database()
    p = f"proof{uuid.uuid4().hex[:6]}"
    names = {"inbound": f"{p}.inbound", "dlx": f"{p}.dlx", "dlq": f"{p}.dlq", "updates": f"{p}.updates"}
    proxies = Proxies()
    env = {**os.environ, "UNSUBD_CONFIG": str(EXAMPLE_TOML), "UNSUBD_LOG_LEVEL": "WARNING",
           "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0", **FAST,
           "UNSUBD_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{proxies.pg.port}/{pg_name}",
           "UNSUBD_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxies.mq.port}/",
           "UNSUBD_AMQP__INBOUND_QUEUE": names["inbound"], "UNSUBD_AMQP__DEAD_LETTER_EXCHANGE": names["dlx"],
           "UNSUBD_AMQP__DEAD_LETTER_QUEUE": names["dlq"], "UNSUBD_AMQP__UPDATES_EXCHANGE": names["updates"]}
    logs = work / "production-logs"
    logs.mkdir(parents=True, exist_ok=True)
    watcher = UpdateWatcher(names["updates"])
    watcher.start()
    watcher.ready.wait(30)
    roles = {r: Role(r, env, logs) for r in ROLE_NAMES}
    started = time.monotonic()
    try:
        for role in roles.values():
            role.start()
        mail = [(f"prod{i}@kommun-vast.example", dsn(f"prod{i}@kommun-vast.example")) for i in range(messages)]
        plan = [r for _ in range(kills) for r in ROLE_NAMES]            # round robin: each role `kills` times
        every = max(1, messages // (len(plan) + 3))
        outages = {messages // 3: "database", (2 * messages) // 3: "broker"}
        accepted_rcpts: set[str] = set()
        sent = refused = 0
        refused_in: dict[str, int] = {"database": 0, "broker": 0}
        outage_until: dict[str, float] = {"database": 0.0, "broker": 0.0}
        send_times: list[float] = []
        pending = list(mail)
        done = 0
        restarting: dict[str, threading.Thread | None] = {}
        while pending:
            rcpt, raw = pending.pop(0)
            sent += 1
            t0 = time.monotonic()
            if send(roles["smtp,http"].smtp_port, raw, [BOUNCES], timeout=10):
                accepted_rcpts.add(rcpt)
                send_times.append(time.monotonic() - t0)
            else:
                refused += 1
                for which, until in outage_until.items():
                    refused_in[which] += t0 < until
                pending.append((rcpt, raw))
                time.sleep(0.05)
            done += 1
            if done in outages:
                which = outages[done]
                log(f"production: {which} outage of {outage:g} s after {done} sent")
                proxies.outage(proxies.pg if which == "database" else proxies.mq, outage)
                outage_until[which] = time.monotonic() + outage
            if plan and done % every == 0:
                victim = plan.pop(0)
                if restarting.get(victim) is not None:
                    restarting[victim].join()          # still waiting for a service since its last kill
                roles[victim].kill()
                time.sleep(0.2)
                # Started again as a supervisor would, without holding up the mail: a process
                # started during an outage waits for the service (worker.app.until_reachable).
                restarting[victim] = threading.Thread(target=roles[victim].start, daemon=True)
                restarting[victim].start()
                log(f"production: killed {victim} ({len(plan)} kills left) after {done} sent")
            if sent > messages * 20:
                break
        for thread in restarting.values():
            if thread is not None:
                thread.join()
        for role in plan:                          # any kills the stream was too short for
            roles[role].kill()
            roles[role].start()
        for rcpt, raw in mail[-3:]:                # 250s lost in a kill: the sender resends
            sent += 1
            send(roles["smtp,http"].smtp_port, raw, [BOUNCES])
        deadline = time.monotonic() + 120 + messages * 0.2
        while True:
            state = ledger(pg_name)
            if (accepted_rcpts <= state["suppressed"] and state["unpublished"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1.0)                            # the watcher's last deliveries
        state = ledger(pg_name)
        parked = _dead_lettered(names["dlq"])
        kill_counts = {r: role.starts - 1 for r, role in roles.items()}
    finally:
        for role in roles.values():
            role.stop()
        watcher.stop_flag.set()
        watcher.join(10)
        proxies.close()
        asyncio.run(_delete_names(names))
        drop_pg_database(pg_name)
    delivered = sum(watcher.seen.values())
    return {"kills_per_role": kill_counts, "outage_s": outage, "sent": sent, "refused_or_failed": refused,
            "refused_in_database_outage": refused_in["database"], "refused_in_broker_outage": refused_in["broker"],
            "accepted": len(accepted_rcpts), "applied": len(accepted_rcpts & state["suppressed"]),
            "lost": len(accepted_rcpts - state["suppressed"]),
            "wrongly_changed": len(state["suppressed"] - accepted_rcpts),
            "duplicated": state["duplicated"], "sequence_gaps": state["sequence_gaps"],
            "unpublished": state["unpublished"], "parked": parked,
            "updates_written": state["outbox"], "updates_delivered": delivered,
            "redelivered": delivered - len(watcher.seen),
            "missing_on_broker": max(0, state["outbox"] - len(watcher.seen)),
            "send_p99_ms": round(pct(send_times, 99) * 1000, 1),
            "seconds": round(time.monotonic() - started, 1)}


def held(result: dict[str, Any], kills: int) -> bool:
    """The targets: nothing lost, doubled, gapped, parked or left unpublished; every role killed."""
    return (result["lost"] == 0 and result["duplicated"] == 0 and result["sequence_gaps"] == 0
            and result["parked"] == 0 and result["unpublished"] == 0 and result["wrongly_changed"] == 0
            and result["missing_on_broker"] == 0 and min(result["kills_per_role"].values()) >= kills)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1, help="kills of each role (15 in the long run)")
    parser.add_argument("--messages", type=int, default=60, help="bounces sent (600 in the long run)")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds of each outage (30 in the long run)")
    parser.add_argument("--json", metavar="PATH", help="also write the counters to this JSON file")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="unsubd-proof-prod-") as tmp:
        result = attack_roles(Path(tmp), args.kills, args.messages, args.outage,
                              log=lambda s: print(s, file=sys.stderr, flush=True))
    for name, value in result.items():
        print(f"  {name:20} {value}")
    ok = held(result, args.kills)
    print("targets:", "held" if ok else "MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
