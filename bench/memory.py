"""Memory over a long run: resident memory of `unsubd serve` while many corpus messages go through.

Starts `unsubd serve` (embedded: one process with SQLite; production: PostgreSQL and
RabbitMQ with listener and worker processes apart, as bench/pipeline.py does), then
sends --messages corpus messages over SMTP in rounds of --round messages. After each
round it waits until the consumer has caught up (nothing left due in the inbound
queue), so the figure is memory per message processed, not a growing backlog, and
samples the resident set size (VmRSS) of every unsubd process and its parser workers.

Prints the samples and the growth from the first sample after warm-up to the last,
and writes bench/results/memory.json. No pass/fail: read the curve.

    .venv/bin/python bench/memory.py [--messages 20000] [--round 1000] [--mode embedded|production]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from pipeline import (PG, RABBIT, Serve, accept_rate, corpus_messages, drop_pg_database,  # noqa: E402
                      make_pg_database)


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


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(procs: list[subprocess.Popen[str]]) -> dict[str, Any]:
    per: dict[str, float] = {}
    for proc in procs:
        for pid in tree(proc.pid):
            per[str(pid)] = round(rss_kb(pid) / 1024, 1)
    return {"rss_mb": per, "total_mb": round(sum(per.values()), 1),
            "main_mb": round(sum(rss_kb(p.pid) for p in procs) / 1024, 1)}


def embedded_due(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        metrics = dict(line.split(" ", 1) for line in r.read().decode().splitlines() if " " in line)
    return int(metrics.get("unsubd_inbound_pending", 0)) + int(metrics.get("unsubd_inbound_processing", 0))


def rabbit_due(queue: str) -> int:
    async def count() -> int:
        import aio_pika

        conn = await aio_pika.connect(RABBIT)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(queue, passive=True)
            return q.declaration_result.message_count or 0
    return asyncio.run(count())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--round", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--mode", choices=["embedded", "production"], default="embedded")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory.json")
    args = ap.parse_args()
    corpus = corpus_messages()
    tmp = Path(tempfile.mkdtemp(prefix="unsubd-memory-"))
    env = {"UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0", "UNSUBD_LOG_LEVEL": "WARNING",
           "UNSUBD_CONFIG": str(REPO / "config" / "example.toml"),
           "UNSUBD_SMTP__MAX_SESSIONS": str(args.sessions + 10)}
    pg_name = None
    if args.mode == "embedded":
        env["UNSUBD_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / 'memory.db'}"
    else:
        pg_name = make_pg_database()
        p = f"mem{uuid.uuid4().hex[:6]}"
        env.update({"UNSUBD_DATABASE_URL": PG + pg_name, "UNSUBD_AMQP_URL": RABBIT,
                    "UNSUBD_AMQP__INBOUND_QUEUE": f"{p}.inbound", "UNSUBD_AMQP__DEAD_LETTER_EXCHANGE": f"{p}.dlx",
                    "UNSUBD_AMQP__DEAD_LETTER_QUEUE": f"{p}.dlq", "UNSUBD_AMQP__UPDATES_EXCHANGE": f"{p}.updates"})
    server = Serve(env, split=(args.mode == "production"))
    samples = []
    started = time.perf_counter()
    try:
        samples.append({"messages": 0, "seconds": 0.0, **sample(server.procs)})
        sent = 0
        while sent < args.messages:
            n = min(args.round, args.messages - sent)
            # Distinct bytes per message (a header), so none is a duplicate of an earlier one.
            batch = [(raw + f"X-Memory-Bench: {sent + i}\r\n".encode(), rcpt)
                     for i, (raw, rcpt) in enumerate(corpus[(sent + i) % len(corpus)] for i in range(n))]
            accept_rate(server.smtp_port, batch, args.sessions, n)
            sent += n
            deadline = time.time() + 600
            while time.time() < deadline:
                due = embedded_due(server.http_port) if args.mode == "embedded" else \
                    rabbit_due(env["UNSUBD_AMQP__INBOUND_QUEUE"])
                if due == 0:
                    break
                time.sleep(0.2)
            s = {"messages": sent, "seconds": round(time.perf_counter() - started, 1), **sample(server.procs)}
            samples.append(s)
            print(f"{sent:6d} messages  {s['seconds']:7.1f}s  total {s['total_mb']:7.1f} MB  "
                  f"unsubd processes {s['main_mb']:6.1f} MB", flush=True)
    finally:
        server.stop()
        if pg_name:
            drop_pg_database(pg_name)
            for q in (env["UNSUBD_AMQP__INBOUND_QUEUE"], env["UNSUBD_AMQP__DEAD_LETTER_QUEUE"]):
                subprocess.run(["rabbitmqctl", "delete_queue", q], capture_output=True)
    warm = samples[min(2, len(samples) - 1)]
    last = samples[-1]
    result = {"bench": "memory", "mode": args.mode, "messages": args.messages, "round": args.round,
              "samples": samples,
              "growth_after_warm_up_mb": {"total": round(last["total_mb"] - warm["total_mb"], 1),
                                          "unsubd_processes": round(last["main_mb"] - warm["main_mb"], 1),
                                          "from_messages": warm["messages"], "to_messages": last["messages"]},
              "machine": {"cpus": os.cpu_count()}, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(result["growth_after_warm_up_mb"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
