"""`unsubd users add|disable|reset|list`, run as a real subprocess on a SQLite file; the
accounts it makes are then signed in with, in this process (worker.console.auth)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from worker.console.auth import PasswordSignIn
from worker.store import users
from worker.store.db import Database
from tests.conftest import EXAMPLE_TOML, REPO, make_settings

PASSWORD = "a long enough password"


def unsubd(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNSUBD_CONFIG": str(EXAMPLE_TOML), "UNSUBD_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "worker.cli.main", "users", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def sign_in(db: Path, name: str, password: str, now: datetime) -> users.User | None:
    async def run() -> users.User | None:
        database = Database.connect(f"sqlite+aiosqlite:///{db}")
        try:
            return await PasswordSignIn(database, make_settings())(name, password, now)
        finally:
            await database.close()
    return asyncio.run(run())


def test_add_list_and_sign_in(tmp_path):
    db = tmp_path / "unsubd.db"
    r = unsubd(db, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "added console user ada (admin)" in r.stdout and PASSWORD not in r.stdout + r.stderr
    r = unsubd(db, "add", "Olle", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    assert r.returncode == 0, r.stderr                                  # the name is kept in lower case
    listed = unsubd(db, "list")
    assert listed.returncode == 0 and listed.stdout.splitlines() == ["ada\tadmin\tactive", "olle\tviewer\tactive"]
    rows = [json.loads(line) for line in unsubd(db, "list", "--json").stdout.splitlines()]
    assert [(x["name"], x["role"], x["state"]) for x in rows] == [("ada", "admin", "active"),
                                                                   ("olle", "viewer", "active")]
    now = datetime.now(timezone.utc)
    assert [x["last_sign_in_at"] for x in rows] == [None, None]
    user = sign_in(db, "ada", PASSWORD, now)
    assert user is not None and user.role == "admin"
    assert sign_in(db, "ada", PASSWORD + "x", now) is None
    rows = {x["name"]: x for x in map(json.loads, unsubd(db, "list", "--json").stdout.splitlines())}
    assert rows["ada"]["last_sign_in_at"] == now.isoformat() and rows["olle"]["last_sign_in_at"] is None


def test_bad_input_is_refused_with_a_message_and_exit_2(tmp_path):
    db = tmp_path / "unsubd.db"
    assert unsubd(db, "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD).returncode == 0
    cases = [
        (("add", "ada", "--role", "viewer", "--password-stdin"), PASSWORD, "exists already"),
        (("add", "bo", "--role", "viewer", "--password-stdin"), "short", "at least 12 characters"),
        (("add", "bo ek", "--role", "viewer", "--password-stdin"), PASSWORD, "user name"),
        (("add", "bo", "--role", "root", "--password-stdin"), PASSWORD, "invalid choice"),
        (("add", "bo", "--role", "viewer"), PASSWORD, "--password-stdin"),          # no terminal to ask on
    ]
    for args, stdin, words in cases:
        r = unsubd(db, *args, stdin=stdin)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert [line.split("\t")[0] for line in unsubd(db, "list").stdout.splitlines()] == ["ada"]


def test_disable_and_reset(tmp_path):
    db = tmp_path / "unsubd.db"
    assert unsubd(db, "add", "olle", "--role", "operator", "--password-stdin", stdin=PASSWORD).returncode == 0
    now = datetime.now(timezone.utc)
    for _ in range(5):
        assert sign_in(db, "olle", "not the password", now) is None
    assert sign_in(db, "olle", PASSWORD, now) is None                    # locked
    assert "locked until" in unsubd(db, "list").stdout

    new = "another long password"
    r = unsubd(db, "reset", "olle", "--role", "admin", "--password-stdin", stdin=new)
    assert r.returncode == 0 and "unlocked" in r.stdout, r.stderr
    assert sign_in(db, "olle", PASSWORD, now) is None                    # the old password is gone
    user = sign_in(db, "olle", new, now + timedelta(seconds=1))
    assert user is not None and user.role == "admin"

    assert unsubd(db, "disable", "olle").returncode == 0
    assert unsubd(db, "list").stdout.splitlines() == ["olle\tadmin\tdisabled"]
    assert sign_in(db, "olle", new, now) is None
    assert unsubd(db, "disable", "olle", "--enable").returncode == 0
    assert sign_in(db, "olle", new, now) is not None

    for args in (("disable", "nobody"), ("reset", "nobody", "--password-stdin")):
        r = unsubd(db, *args, stdin=new)
        assert r.returncode == 1 and "no console user named nobody" in r.stderr
