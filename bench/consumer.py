"""Consumer throughput: how fast one process classifies and applies the corpus mix.

Prefills the embedded queue (SQLite, or PostgreSQL with --postgres or
--database-url) with --messages corpus messages, then starts one `Worker` with the
consumer and relay roles and times until every item is done and every update is
published. Prints messages/s (and the same for the sandboxed classifier alone, the
ceiling the parser sets), how long the sandbox takes to answer for one message at a
time (p50 and p99 of 300 corpus messages, 10 ms apart, as a quiet consumer sees it), how
many decisions each database transaction carried, and writes bench/results/consumer.json.

    .venv/bin/python -m bench.consumer [--messages 2000] [--postgres | --database-url URL]
    (UNSUBD_* variables apply, e.g. UNSUBD_CONSUMER__CONCURRENCY=16)

--postgres creates a fresh database on 127.0.0.1:5432 and drops it afterwards; a
--database-url must point at an empty, migrated database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import config
from handlers.model import Inbound
from worker.app import Worker
from worker.pipeline.pool import ClassifyFailed, ClassifyPool

from bench.pipeline import corpus_messages, drop_pg_database, make_pg_database, pct, PG


async def run(args: argparse.Namespace) -> dict:
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'consumer.db'}"
    env = {k: v for k, v in os.environ.items() if k.startswith("UNSUBD_")}   # e.g. UNSUBD_CONSUMER__CONCURRENCY
    settings = config.load({**env, "UNSUBD_DATABASE_URL": url, "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0"},
                           REPO / "config" / "example.toml")
    corpus = corpus_messages()
    now = datetime.now(timezone.utc)
    items = [Inbound.from_smtp(raw + f"\nX-Bench: {i}\n".encode(), "", [rcpt], now)
             for i, (raw, rcpt) in enumerate(corpus[i % len(corpus)] for i in range(args.messages))]

    pool = ClassifyPool(settings)
    await pool.warm_up()
    started = time.perf_counter()
    await asyncio.gather(*(pool.classify(item, now) for item in items[:500]), return_exceptions=True)
    classify_rate = min(500, len(items)) / (time.perf_counter() - started)
    alone = []
    for item in items[:300]:
        started = time.perf_counter()
        try:
            await pool.classify(item, now)
        except ClassifyFailed:
            continue
        alone.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)

    filler = Worker(settings, roles=["relay"])
    await filler.start()
    for item in items:
        await filler.queue.put(item)
    await filler.stop()

    worker = Worker(settings, roles=["consumer", "relay"], pool=pool)
    started = time.perf_counter()
    await worker.start()
    while True:
        counts = await worker.queue.counts()
        if counts.get("done", 0) + counts.get("failed", 0) >= len(items) and not await worker.relay.backlog(1):
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    applier = worker.consumer._applier
    await worker.stop()
    return {"bench": "consumer", "database": url.split(":")[0], "messages": len(items),
            "seconds": round(seconds, 2), "per_s": round(len(items) / seconds, 1),
            "classify_only_per_s": round(classify_rate, 1), "parse_workers": settings.parse.workers,
            "classify_alone_ms": {"p50": round(pct(alone, 50), 2), "p99": round(pct(alone, 99), 2)},
            "concurrency": settings.consumer.concurrency,
            "decisions_per_transaction": round(applier.items / max(1, applier.flushes), 1),
            "published": worker.relay.published,
            "outcomes": counts, "machine": {"cpus": os.cpu_count()},
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--database-url")
    ap.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database on 127.0.0.1")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "consumer.json")
    args = ap.parse_args()
    pg_name = None
    if args.postgres:
        pg_name = make_pg_database()
        args.database_url = PG + pg_name
    try:
        result = asyncio.run(run(args))
    finally:
        if pg_name:
            drop_pg_database(pg_name)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
