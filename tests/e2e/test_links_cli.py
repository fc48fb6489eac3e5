"""`unsubd token` as a real subprocess, the key file beside the database, and token settings."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import config
from config import ConfigError
from handlers.tokens import Claims, verify, verify_return_path
from worker.store.keys import key_file_for, keyring_for, load_or_create
from tests.conftest import EXAMPLE_TOML, make_settings
from tests.e2e.test_cli import unsubd

SECRET = "0123456789abcdef0123456789abcdef"


def test_unsubd_token_prints_the_header_set_for_a_contact(tmp_path: Path):
    db = tmp_path / "u.db"
    csv = tmp_path / "c.csv"
    csv.write_text("address,name,units\nNora@Example.se,Nora,alumni\n", encoding="utf-8")
    assert unsubd("contacts", "import", str(csv), db=db).returncode == 0

    res = unsubd("token", "nora@example.se", "--unit", "alumni", "--json", db=db)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    token = out["token"]
    assert out["address"] == "nora@example.se" and out["unit"] == "alumni" and out["channel"] == "email"
    assert out["headers"]["List-Unsubscribe"] == (
        f"<http://127.0.0.1:8025/u/{token}>, <mailto:unsubscribe+{token}@mail.example.org?subject=unsubscribe>")
    assert out["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The embedded default: a key file beside the database, private, reused by later runs.
    keys = key_file_for(f"sqlite+aiosqlite:///{db}")
    assert keys == tmp_path / "u.db.keys" and keys.exists()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    ring = load_or_create(keys)
    assert verify(token, ring) == Claims(out["contact_id"], "alumni", "email", ring.active)

    text = unsubd("token", "NORA@example.se", "--unit", "*", "--channel", "*", db=db)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("List-Unsubscribe: <http://127.0.0.1:8025/u/")
    assert lines[1] == "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    assert any("DKIM" in line for line in lines)
    (rp_line,) = [line for line in lines if line.startswith("Return-Path: ")]
    tag = rp_line.split("<bounces+")[1].split("@")[0]
    rp = verify_return_path(tag, ring, ["alumni"])
    assert rp is not None and rp.contact_id == out["contact_id"] and rp.unit == "*"
    assert rp.names("nora@example.se")
    assert verify_return_path(out["return_path"].split("+")[1].split("@")[0], ring, ["alumni"]).unit == "alumni"
    wildcard = lines[0].split("/u/")[1].split(">")[0]
    assert verify(wildcard, ring) == Claims(out["contact_id"], "*", "*", ring.active)

    missing = unsubd("token", "nobody@example.se", "--unit", "alumni", db=db)
    assert missing.returncode == 1 and "no contact" in missing.stderr
    assert unsubd("token", "nora@example.se", "--unit", "no-such-unit", db=db).returncode == 2
    assert unsubd("token", "nora@example.se", "--unit", "alumni", "--channel", "fax", db=db).returncode == 2
    short = unsubd("token", "nora@example.se", "--unit", "alumni", db=db, UNSUBD_TOKENS__KEYS='{"k1": "short"}')
    assert short.returncode == 2 and "tokens.keys" in short.stderr and "'k1'" in short.stderr


def test_the_key_file_is_created_once_and_read_back(tmp_path: Path):
    path = tmp_path / "x.db.keys"
    first = load_or_create(path)
    assert load_or_create(path) == first and len(first.secrets[first.active]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name != "x.db.keys"]      # no temporary file left
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="x.db.keys"):
        load_or_create(path)


def test_keys_come_from_settings_first_and_postgres_needs_them(tmp_path: Path):
    configured = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", UNSUBD_TOKENS__KEYS=f'{{"p1": "{SECRET}"}}')
    ring = keyring_for(configured)
    assert ring is not None and ring.active == "p1" and ring.secrets["p1"] == SECRET.encode()
    assert not (tmp_path / "a.db.keys").exists()
    assert keyring_for(make_settings("postgresql+asyncpg://u@127.0.0.1/x")) is None
    assert keyring_for(make_settings()) is not None                        # in-memory SQLite: a process key


@pytest.mark.parametrize("env,names", [
    ({"UNSUBD_TOKENS__KEYS": '{"k1": "too-short"}'}, ["tokens.keys", "'k1'", "too short"]),
    ({"UNSUBD_TOKENS__KEYS": f'{{"bad id!": "{SECRET}"}}'}, ["tokens.keys", "'bad id!'"]),
    ({"UNSUBD_TOKENS__KEYS": f'{{"k1": "{SECRET}"}}', "UNSUBD_TOKENS__ACTIVE": "k2"}, ["tokens", "'k2'"]),
    ({"UNSUBD_TOKENS__KEYS": f'{{"k1": "{SECRET}", "k2": "{SECRET}"}}'}, ["tokens", "tokens.active"]),
    ({"UNSUBD_TOKENS__BASE_URL": "ftp://x"}, ["tokens.base_url"]),
])
def test_invalid_token_settings_name_the_setting(env, names):
    with pytest.raises(ConfigError) as err:
        config.load(env, EXAMPLE_TOML)
    for name in names:
        assert name in str(err.value)


def test_rotation_through_settings():
    settings = config.load({"UNSUBD_TOKENS__KEYS": f'{{"old": "{SECRET}", "new": "{SECRET[::-1]}"}}',
                            "UNSUBD_TOKENS__ACTIVE": "new"}, EXAMPLE_TOML)
    assert "0123" not in repr(settings.tokens)                  # secrets stay out of reprs and logs
    ring = keyring_for(settings)
    assert ring is not None and ring.active == "new" and set(ring.secrets) == {"old", "new"}
