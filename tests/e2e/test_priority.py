"""A process that consumes but does not accept mail yields the CPU to one that does.

`unsubd serve` processes are started for real and their nice values read from the
kernel; the parser processes a consumer starts are found through /proc.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import ConfigError
from worker.app import lower_priority
from tests.conftest import EXAMPLE_TOML, REPO, make_settings
from tests.support.messages import dsn
from tests.e2e.test_pipeline import db_counts
from tests.integration.test_smtp import send, wait_for

MAX_NICE = 19


def started(db_path: Path, roles: str, **env: str) -> tuple[subprocess.Popen[str], int | None]:
    """`unsubd serve --role ROLES` on the SQLite file, once it says it is serving; the
    process and its SMTP port (None without the smtp role)."""
    full = {**os.environ, "UNSUBD_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}", "UNSUBD_SMTP_PORT": "0",
            "UNSUBD_HTTP_PORT": "0", "UNSUBD_CONFIG": str(EXAMPLE_TOML), "UNSUBD_LOG_LEVEL": "WARNING", **env}
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "serve", "--role", roles], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("unsubd serving"), f"{line!r} (exit {proc.poll()})"
    m = re.search(r"smtp \('[^']+', (\d+)\)", line)
    return proc, int(m.group(1)) if m else None


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    running: list[subprocess.Popen[str]] = []
    yield running
    for proc in running:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc (the forkserver and its parsers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue                                 # it ended while we looked
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        out.extend(below)
        todo.extend(below)
    return out


def nice_of(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_a_consumer_without_a_listener_runs_at_the_lowest_priority_parsers_included(tmp_path, procs):
    base = nice_of(0)
    consumer, _ = started(tmp_path / "u.db", "consumer,relay")
    procs.append(consumer)
    assert nice_of(consumer.pid) == min(base + MAX_NICE, MAX_NICE)
    below = descendants(consumer.pid)
    assert len(below) >= 3                          # the forkserver and two parser processes
    assert {nice_of(pid) for pid in below} == {MAX_NICE}


@pytest.mark.parametrize("roles, env", [
    ("smtp,http,consumer,relay", {}),               # the listener shares the process: no change
    ("consumer", {"UNSUBD_CONSUMER__NICE": "0"}),   # turned off
])
def test_a_process_with_a_listener_or_with_the_setting_off_keeps_its_priority(tmp_path, procs, roles, env):
    base = nice_of(0)
    proc, _ = started(tmp_path / "u.db", roles, **env)
    procs.append(proc)
    assert nice_of(proc.pid) == base


def test_the_setting_is_bounded_and_only_consumer_roles_without_smtp_qualify():
    assert lower_priority(make_settings(), ["smtp", "http", "consumer", "relay"]) is None
    assert lower_priority(make_settings(), ["smtp", "http", "relay"]) is None
    assert lower_priority(make_settings(UNSUBD_CONSUMER__NICE="0"), ["consumer"]) is None
    for bad in ("-1", "20"):
        with pytest.raises(ConfigError, match="consumer.nice"):
            make_settings(UNSUBD_CONSUMER__NICE=bad)


async def test_a_lowered_consumer_still_applies_what_a_listener_beside_it_accepts(tmp_path, procs):
    db = tmp_path / "u.db"
    listener, port = started(db, "smtp,http")
    procs.append(listener)
    consumer, _ = started(db, "consumer,relay", UNSUBD_CONSUMER__POLL_INTERVAL="0.05")
    procs.append(consumer)
    for i in range(5):
        assert send(port, dsn(f"lowered-{i}@kommun-vast.example"), ["bounces@mail.example.org"]) == {}

    async def all_applied() -> bool:
        return (await db_counts(db))["bounce_events"] == 5

    await wait_for(all_applied, timeout=30)
    assert (await db_counts(db))["suppressions"] == 5
