"""The promises end to end, with `unsubd serve` as a real process that gets killed.

1. 250 means durable: SIGKILL right after the 250s loses nothing.
2. Redelivery changes nothing twice: SIGKILL mid-stream, restart, every message applied once.
4. A message that cannot be handled never stops the worker: it is parked with its reason.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from worker.app import Worker
from worker.store.db import Database
from worker.store.models import Event, InboundItem, Outbox, Suppression
from tests.conftest import EXAMPLE_TOML, REPO, make_settings
from tests.support.pool_fns import poison_message, poisoned
from worker.pipeline.pool import ClassifyPool
from tests.support.messages import dsn, plain
from tests.integration.test_smtp import send, wait_for

BOUNCES = "bounces@mail.example.org"


class Serve:
    """`unsubd serve` in a subprocess, on free ports, against one SQLite file."""

    def __init__(self, db_path: Path, *extra: str, **env: str) -> None:
        self.env = {**os.environ, "UNSUBD_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}",
                    "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0", "UNSUBD_CONFIG": str(EXAMPLE_TOML),
                    "UNSUBD_CONSUMER__LEASE": "2", "UNSUBD_LOG_LEVEL": "WARNING", **env}
        self.args = [sys.executable, "-m", "worker.cli.main", "serve", *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.smtp_port = 0

    def start(self) -> Serve:
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()          # "unsubd serving: smtp ('127.0.0.1', 12345), http ..."
        match = re.search(r"smtp \('[^']+', (\d+)\)", line)
        assert match, f"unexpected start-up line: {line!r} (exit {self.proc.poll()})"
        self.smtp_port = int(match.group(1))
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for s in started:
        s.ensure_stopped()


async def db_counts(db_path: Path) -> dict[str, Any]:
    db = Database.connect(f"sqlite+aiosqlite:///{db_path}")
    try:
        async with db.sessions() as s:
            statuses = dict((await s.execute(select(InboundItem.status, func.count())
                                             .group_by(InboundItem.status))).all())
            return {
                "items": sum(statuses.values()), "statuses": statuses,
                "events": await s.scalar(select(func.count()).select_from(Event)),
                "bounce_events": await s.scalar(select(func.count()).select_from(Event).where(Event.kind == "bounce")),
                "event_items": await s.scalar(select(func.count(func.distinct(Event.item_id)))),
                "suppressions": await s.scalar(select(func.count()).select_from(Suppression)),
                "outbox": await s.scalar(select(func.count()).select_from(Outbox)),
                "published": await s.scalar(select(func.count()).select_from(Outbox)
                                            .where(Outbox.published_at.is_not(None))),
            }
    finally:
        await db.close()


def recipients(n: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i}@kommun-vast.example" for i in range(n)]


async def test_killed_right_after_250_loses_nothing_and_applies_nothing_twice(tmp_path, serves):
    db_path = tmp_path / "u.db"
    messages = [dsn(r) for r in recipients(15)]
    listener = Serve(db_path, "--role", "smtp").start()       # no consumer: items wait in the queue
    serves.append(listener)
    for raw in messages:
        assert await asyncio.to_thread(send, listener.smtp_port, raw, [BOUNCES]) == {}
    listener.kill()                                           # SIGKILL: no chance to flush anything
    counts = await db_counts(db_path)
    assert counts["items"] == 15 and counts["statuses"] == {"pending": 15} and counts["events"] == 0

    full = Serve(db_path).start()
    serves.append(full)
    await wait_for(lambda: _published(db_path, 15), timeout=60)
    # The sender never saw our 250 for some of them and sends again: recognised, not applied again.
    for raw in messages[:5]:
        assert await asyncio.to_thread(send, full.smtp_port, raw, [BOUNCES]) == {}
    assert full.terminate() == 0
    counts = await db_counts(db_path)
    assert counts["items"] == 15 and counts["statuses"] == {"done": 15}
    assert counts["events"] == counts["event_items"] == 15
    assert counts["suppressions"] == counts["outbox"] == counts["published"] == 15


async def _published(db_path: Path, n: int) -> bool:
    return (await db_counts(db_path))["published"] >= n


async def test_killed_mid_stream_every_accepted_message_is_applied_exactly_once(tmp_path, serves):
    db_path = tmp_path / "u.db"
    first = Serve(db_path).start()
    serves.append(first)
    accepted = []
    for i, rcpt in enumerate(recipients(40, "mid")):
        raw = dsn(rcpt)
        assert await asyncio.to_thread(send, first.smtp_port, raw, [BOUNCES]) == {}
        accepted.append(raw)
        if i == 25:
            first.kill()                                      # mid-stream: some done, some in flight
            second = Serve(db_path).start()
            serves.append(second)
            first = second
    await wait_for(lambda: _published(db_path, 40), timeout=90)
    assert first.terminate() == 0
    counts = await db_counts(db_path)
    assert counts["items"] == 40 and counts["statuses"] == {"done": 40}
    assert counts["bounce_events"] == counts["event_items"] == 40
    assert counts["suppressions"] == counts["outbox"] == counts["published"] == 40


async def test_sigterm_stops_gracefully_with_nothing_half_done(tmp_path, serves):
    db_path = tmp_path / "u.db"
    s = Serve(db_path).start()
    serves.append(s)
    for rcpt in recipients(10, "term"):
        assert await asyncio.to_thread(send, s.smtp_port, dsn(rcpt), [BOUNCES]) == {}
    started = time.monotonic()
    assert s.terminate() == 0
    assert time.monotonic() - started < 25
    counts = await db_counts(db_path)
    # Finished items are done and published; unstarted ones wait, pending, for the next start.
    assert set(counts["statuses"]) <= {"done", "pending"} and counts["items"] == 10
    assert counts["published"] == counts["outbox"] == counts["statuses"].get("done", 0)


@pytest.fixture
async def worker(sqlite_url: str):
    settings = make_settings(sqlite_url, UNSUBD_PARSE__CPU_SECONDS="1", UNSUBD_PARSE__WALL_SECONDS="5")
    w = Worker(settings, pool=ClassifyPool(settings, classify_fn=poisoned))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def item_status(w: Worker) -> dict[str, tuple[str, str | None]]:
    async with w.db.sessions() as s:
        return {i.id: (i.status, i.last_error) for i in (await s.scalars(select(InboundItem))).all()}


async def test_a_pathologically_slow_message_is_parked_while_other_mail_flows(worker: Worker):
    port = worker.smtp_address[1]
    assert await asyncio.to_thread(send, port, poison_message(), [BOUNCES]) == {}
    good = [dsn(r) for r in recipients(6, "flow")]
    for raw in good:
        assert await asyncio.to_thread(send, port, raw, [BOUNCES]) == {}

    async def settled():
        st = await item_status(worker)
        return len(st) == 7 and all(v[0] in ("done", "failed") for v in st.values()) and st

    statuses = await wait_for(settled, timeout=60)
    failed = [err for status, err in statuses.values() if status == "failed"]
    assert len(failed) == 1 and "limit" in failed[0]
    assert sum(1 for status, _ in statuses.values() if status == "done") == 6
    assert worker.consumer.counters.parked == 1


MALFORMED = [
    b"",
    b"\x00\x01\x02 not a message at all \xff\xfe",
    b"From: a@example.se\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; \x00@@\r\nAction: failed\r\nStatus: 5.1.1",
    b"Subject: =?utf-8?b?!!!notbase64?=\r\nContent-Type: text/plain; charset=x-unknown-42\r\n\r\n\xe5\xe4\xf6",
    b"X-Long: " + b"\r\n ".join([b"a" * 900] * 1200) + b"\r\nSubject: huge folded header\r\n\r\nbody",
]


async def test_malformed_messages_are_recorded_with_their_reason_and_never_crash(worker: Worker):
    port = worker.smtp_address[1]
    for raw in MALFORMED:
        assert await asyncio.to_thread(send, port, raw, ["reply@mail.example.org"]) == {}
    # Long lines are accepted (real MTAs send them), but one unfolded 2 MB line (over
    # smtp.max_line_length) is refused with a transient 451, not crashed on (worker/ingress/smtp.py).
    long_line = plain(body="x" * 5000)
    assert await asyncio.to_thread(send, port, long_line, ["reply@mail.example.org"]) == {}
    with pytest.raises(smtplib.SMTPDataError) as err:
        await asyncio.to_thread(send, port, b"X-Long: " + b"a" * 2_000_000 + b"\r\n\r\nbody",
                                ["reply@mail.example.org"])
    assert err.value.smtp_code == 451
    assert await asyncio.to_thread(send, port, dsn("after.junk@kommun-vast.example"), [BOUNCES]) == {}

    async def settled():
        st = await item_status(worker)
        return len(st) == len(MALFORMED) + 2 and all(v[0] == "done" for v in st.values()) and st

    await wait_for(settled, timeout=60)
    async with worker.db.sessions() as s:
        events = (await s.scalars(select(Event))).all()
        sups = (await s.scalars(select(Suppression.address))).all()
    assert len(events) == len(MALFORMED) + 2
    assert all(e.reason for e in events)                      # every one says why
    unreadable = [e for e in events if e.review]
    assert len(unreadable) >= 2 and all(e.kind == "unknown" for e in unreadable)   # for a person to look at
    assert sups == ["after.junk@kommun-vast.example"]         # nothing acted on from the junk


async def test_an_item_that_keeps_failing_is_parked_after_max_attempts(sqlite_url: str):
    """An apply that fails every time (here: the database refuses the write) is retried, then parked."""
    settings = make_settings(sqlite_url, UNSUBD_CONSUMER__MAX_ATTEMPTS="3", UNSUBD_CONSUMER__RETRY_BASE="0.05",
                             UNSUBD_CONSUMER__POLL_INTERVAL="0.05")
    w = Worker(settings)
    await w.start()
    try:
        async with w.db.engine.begin() as conn:              # make every event insert fail, as a broken disk would
            await conn.exec_driver_sql(
                "CREATE TRIGGER no_events BEFORE INSERT ON event BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        assert await asyncio.to_thread(send, w.smtp_address[1], dsn("x@kommun-vast.example"), [BOUNCES]) == {}
        assert await asyncio.to_thread(send, w.smtp_address[1], plain(), ["reply@mail.example.org"]) == {}

        async def parked():
            st = await item_status(w)
            return len(st) == 2 and all(v[0] == "failed" for v in st.values()) and st

        statuses = await wait_for(parked, timeout=30)
        assert all("disk says no" in err and "after 3 attempts" in err for _, err in statuses.values())
        assert w.consumer.counters.retried == 4 and w.consumer.counters.parked == 2
    finally:
        await w.stop()
