"""Latency and throughput of the embedded pipeline: SMTP 250 to a published update.

Starts `unsubd serve` (SQLite, embedded queue) as a subprocess on free ports, sends
RFC 3464 bounces over SMTP at a fixed rate from a few client threads, and reads each
update's `published_at` from the database. Latency = published_at - time of the 250.
Prints the figures and writes them as JSON (bench/results/pipeline_latency.json).

    .venv/bin/python bench/pipeline_latency.py [--messages 500] [--rate 50] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from worker.db import Database  # noqa: E402
from worker.models import Outbox  # noqa: E402


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


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def published(db_url: str) -> dict[str, datetime]:
    db = Database.connect(db_url)
    try:
        async with db.sessions() as s:
            rows = (await s.execute(select(Outbox.payload, Outbox.published_at)
                                    .where(Outbox.published_at.is_not(None)))).all()
        return {p["address"]: at for p, at in rows}
    finally:
        await db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second offered")
    ap.add_argument("--clients", type=int, default=4, help="concurrent SMTP client threads")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline_latency.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="unsubd-bench-"))
    db_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    env = {**os.environ, "UNSUBD_DATABASE_URL": db_url, "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0",
           "UNSUBD_CONFIG": str(REPO / "config" / "example.toml"), "UNSUBD_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"smtp \('[^']+', (\d+)\)", line).group(1))
        accepted: dict[str, datetime] = {}
        lock = threading.Lock()
        interval = 1.0 / args.rate
        start = time.monotonic()

        def send(i: int) -> None:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rcpt = f"bench{i}@kommun-vast.example"
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.sendmail("", ["bounces@mail.example.org"], bounce(rcpt))
            with lock:
                accepted[rcpt] = datetime.now(timezone.utc)

        with ThreadPoolExecutor(args.clients) as ex:
            list(ex.map(send, range(args.messages)))
        send_seconds = time.monotonic() - start
        deadline = time.monotonic() + 120
        while True:
            done = asyncio.run(published(db_url))
            if len(done) >= args.messages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        total_seconds = time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    lat = [(done[a] - t).total_seconds() * 1000 for a, t in accepted.items() if a in done]
    result = {
        "bench": "pipeline_latency", "mode": "embedded (SQLite)", "messages": args.messages,
        "offered_rate_per_s": args.rate, "clients": args.clients, "published": len(lat),
        "achieved_send_rate_per_s": round(args.messages / send_seconds, 1),
        "end_to_end_rate_per_s": round(len(lat) / total_seconds, 1),
        "latency_ms": {"p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1),
                       "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1),
                       "mean": round(statistics.mean(lat), 1)} if lat else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if len(lat) == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
