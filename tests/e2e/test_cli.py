"""The `unsubd` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.context import Context
from handlers.mail.addresses import normalise
from tests.support import corpus
from tests.conftest import EXAMPLE_TOML, REPO
from tests.support.messages import dsn
from tests.unit.test_classify_corpus import NOT_REACHABLE, NOT_REACHABLE_LINES, RFC3464_LINES


def unsubd(*args: str, db: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "UNSUBD_CONFIG": str(EXAMPLE_TOML), **env}
    if db is not None:
        full_env["UNSUBD_DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
    return subprocess.run([sys.executable, "-m", "worker.cli.main", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


ACTION_KEYS = {"type", "address", "status", "reason", "hard", "units", "channels"}

# flufl samples whose Final-Recipient is not the labelled address: the report names
# something nobody sends to (a local mailbox, an X.400 address, a host inside the
# recipient's domain), so the Original-Recipient, the labelled address, is acted on
# (issue 21: RFC 3464 section 2.3.1, the address as we gave it).
ORIGINAL_RECIPIENT_USED = {
    "flufl/dsn_01.txt": "Final-Recipient is a local mailbox without a domain (userx@sims-ms-daemon)",
    "flufl/dsn_02.txt": "Final-Recipient is an X.400 address",
    "flufl/dsn_04.txt": "forwarded: Final-Recipient is the forward target",
    "flufl/dsn_09.txt": "Final-Recipient is an X.400 address",
}


def test_classify_json_walks_the_bounce_corpus_and_agrees_on_rfc3464_recipients():
    bounces = corpus.require("bounces")
    result = unsubd("classify", "--json", str(bounces / "sisimai"), str(bounces / "flufl"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    files = {Path(x["file"]).relative_to(bounces).as_posix(): x for x in lines}
    assert len(lines) == len(files) >= 825
    for x in lines:
        assert {"file", "kind", "actions", "review", "verified", "why"} <= set(x)
        assert x["kind"] in {"bounce", "complaint", "optout", "autoreply", "reply", "unknown"}
        for a in x["actions"]:
            assert ACTION_KEYS <= set(a) and (a["units"] == "all" or isinstance(a["units"], list))
    checked = agreed = 0
    for line in RFC3464_LINES:
        if line["file"] in NOT_REACHABLE or (line["file"], line["recipient"]) in NOT_REACHABLE_LINES:
            continue
        if line["kind"] != "bounce" or line.get("permanent") is None:
            continue
        out = files[line["file"]]
        acted = {a["address"]: a for a in out["actions"]}
        want = normalise(line["recipient"])
        checked += 1
        if line["permanent"] is False:
            assert acted.get(want, {}).get("type") != "suppress", line["file"]
            agreed += 1
        else:
            assert want in acted, f"{line['file']}: {want} not acted on: {out['why']}"
            agreed += 1
            if line["file"] in ORIGINAL_RECIPIENT_USED:
                (entry,) = [r for r in out["recipients"] if r["address"] == want]
                assert entry["effect"] in ("suppress", "soft_bounce"), line["file"]
    print(f"\nclassify --json: {agreed}/{checked} RFC 3464 recipient lines agree "
          f"({len(ORIGINAL_RECIPIENT_USED)} through their Original-Recipient)")
    assert checked >= 30 and agreed == checked
    for x in lines:
        for r in x["recipients"]:
            assert {"address", "action", "status", "reason", "hard", "effect"} <= set(r)
            assert r["effect"] in ("suppress", "soft_bounce", "none") and (r["effect"] != "none" or r["why"])


def test_classify_json_recipients_name_every_recipient_and_why(tmp_path: Path):
    # A failed recipient (acted on) and a delayed one (recorded, with why), in two files.
    failed, delayed = tmp_path / "f.eml", tmp_path / "d.eml"
    failed.write_bytes(dsn("anna@kommun-vast.example"))
    delayed.write_bytes(dsn("bo@kommun-vast.example", status="4.4.1", action="delayed"))
    result = unsubd("classify", "--json", str(failed), str(delayed))
    assert result.returncode == 0, result.stderr
    first, second = [json.loads(x) for x in result.stdout.splitlines()]
    assert {"file", "kind", "actions", "review", "verified", "why", "recipients"} <= set(first)
    (entry,) = first["recipients"]
    assert entry["address"] == "anna@kommun-vast.example" and entry["action"] == "failed"
    assert (entry["status"], entry["reason"], entry["hard"], entry["effect"]) == ("5.1.1", "user_unknown", True,
                                                                                  "suppress")
    assert "why" not in entry
    (entry,) = second["recipients"]
    assert (entry["address"], entry["action"], entry["effect"]) == ("bo@kommun-vast.example", "delayed", "none")
    assert entry["why"]


def test_classify_human_output_and_unreadable_paths(tmp_path: Path):
    f = tmp_path / "b.eml"
    f.write_bytes(dsn("someone@kommun-vast.example"))
    ok = unsubd("classify", str(f))
    assert ok.returncode == 0 and "bounce" in ok.stdout and "suppress someone@kommun-vast.example 5.1.1" in ok.stdout
    missing = unsubd("classify", "--json", str(f), str(tmp_path / "nope.eml"))
    assert missing.returncode == 2
    out = [json.loads(x) for x in missing.stdout.splitlines()]
    assert out[0]["kind"] == "bounce" and "error" in out[1]


def test_import_show_and_a_bounce_seen_through_the_cli(tmp_path: Path):
    db = tmp_path / "u.db"
    csv = tmp_path / "c.csv"
    csv.write_text("address,name,units\nAnna.Berg@Example.se,Anna Berg,alumni;events\nbo@example.no,,research-news\n")
    imp = unsubd("contacts", "import", str(csv), db=db)
    assert imp.returncode == 0, imp.stderr
    assert "2 new" in imp.stdout
    again = unsubd("contacts", "import", str(csv), db=db)
    assert "0 new" in again.stdout and "2 unchanged" in again.stdout

    shown = unsubd("contacts", "show", "anna.berg@example.se", "--json", db=db)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["name"] == "Anna Berg" and view["suppressions"] == []
    assert {"unit": "alumni", "channel": "email", "state": "subscribed"} in view["preferences"]
    assert view["events"][0]["kind"] == "import"

    human = unsubd("contacts", "show", "ANNA.BERG@example.se", db=db)
    assert human.returncode == 0 and "not suppressed" in human.stdout and "alumni:" in human.stdout

    unknown = unsubd("contacts", "show", "nobody@example.se", "--json", db=db)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["found"] is False
    bad = unsubd("contacts", "show", "not an address", db=db)
    assert bad.returncode == 2 and "not an email address" in bad.stderr


def test_import_refuses_a_bad_file_whole(tmp_path: Path):
    db = tmp_path / "u.db"
    csv = tmp_path / "c.csv"
    csv.write_text("address,units\nok@example.se,alumni\nnot-an-address,alumni\nx@example.se,no-such-unit\n"
                   "OK@example.se,\n")
    res = unsubd("contacts", "import", str(csv), db=db)
    assert res.returncode == 2
    for expected in ("line 3: not an email address", "line 4: unknown unit(s) no-such-unit",
                     "line 5: ok@example.se already on line 2", "nothing imported"):
        assert expected in res.stderr
    assert unsubd("contacts", "show", "ok@example.se", db=db).returncode == 1
    nohead = tmp_path / "n.csv"
    nohead.write_text("email\nx@example.se\n")
    res = unsubd("contacts", "import", str(nohead), db=db)
    assert res.returncode == 2 and "'address' column" in res.stderr


def test_db_upgrade_reports_the_revision(tmp_path: Path):
    res = unsubd("db", "upgrade", db=tmp_path / "u.db")
    from worker.store import migrate
    import re
    texts = [f.read_text() for f in Path(migrate.__file__).parent.joinpath("migrations", "versions").glob("*.py")]
    revisions = {m for t in texts for m in re.findall(r"^revision = '(\w+)'", t, re.M)}
    parents = {m for t in texts for m in re.findall(r"^down_revision = '(\w+)'", t, re.M)}
    assert revisions - parents == {migrate.head()}         # one head: the revision nothing builds on
    assert res.returncode == 0 and f"schema at revision {migrate.head()}" in res.stdout
    assert (tmp_path / "u.db").exists()


@pytest.mark.parametrize("env, named", [
    ({"UNSUBD_SMTP_PORT": "many"}, "UNSUBD_SMTP_PORT"),
    ({"UNSUBD_AMQP_URL": "http://127.0.0.1:5672/"}, "UNSUBD_AMQP_URL"),
])
def test_serve_refuses_bad_settings_naming_the_key(tmp_path: Path, env, named):
    res = unsubd("serve", db=tmp_path / "u.db", **env)
    assert res.returncode == 2 and named in res.stderr


def test_serve_says_clearly_when_the_broker_is_unreachable(tmp_path: Path):
    # It waits `startup_wait` seconds for the broker (a restart during an outage), saying
    # so, and then exits with the reason.
    res = unsubd("serve", db=tmp_path / "u.db", UNSUBD_AMQP_URL="amqp://guest:secret@127.0.0.1:1/",
                 UNSUBD_STARTUP_WAIT="1")
    assert "RabbitMQ not reachable at start" in res.stderr
    assert res.returncode == 3 and "cannot reach RabbitMQ" in res.stderr
    assert "secret" not in res.stderr                        # the password stays out of the message


def test_serve_refuses_an_unknown_role(tmp_path: Path):
    res = unsubd("serve", "--role", "smtp,teapot", db=tmp_path / "u.db")
    assert res.returncode == 2 and "teapot" in res.stderr


def test_suppressions_export_and_release(tmp_path: Path):
    db = tmp_path / "u.db"
    from tests.support.messages import dsn as make_dsn

    f = tmp_path / "b.eml"
    f.write_bytes(make_dsn("gone@kommun-vast.example"))
    # apply one bounce through the real path: classify + apply, as the consumer does
    import asyncio
    from datetime import datetime, timezone

    from handlers.state.apply import apply
    from handlers.classify import classify
    from handlers.model import Inbound
    from worker.app import prepare_database
    from worker.store.db import Database
    from tests.conftest import make_settings

    async def seed() -> None:
        settings = make_settings(f"sqlite+aiosqlite:///{db}")
        database = Database.connect(settings.database_url)
        await prepare_database(settings, database)
        now = datetime.now(timezone.utc)
        await apply(classify(Inbound.from_file(f.read_bytes(), "b", now), Context.from_settings(settings), now), database.unit_of_work(), now)
        await database.close()

    asyncio.run(seed())
    exported = unsubd("suppressions", "export", db=db)
    assert exported.returncode == 0 and exported.stdout.splitlines()[0] == "address,reason,since,contact_id"
    assert "gone@kommun-vast.example,hard_bounce," in exported.stdout
    missing_reason = unsubd("suppressions", "release", "gone@kommun-vast.example", db=db)
    assert missing_reason.returncode == 2
    released = unsubd("suppressions", "release", "Gone@kommun-vast.example", "--reason", "mailbox restored", db=db)
    assert released.returncode == 0, released.stderr
    assert unsubd("suppressions", "export", "--json", db=db).stdout == ""
    again = unsubd("suppressions", "release", "gone@kommun-vast.example", "--reason", "twice", db=db)
    assert again.returncode == 1
    shown = json.loads(unsubd("contacts", "show", "gone@kommun-vast.example", "--json", db=db).stdout)
    assert shown["suppressions"] == [] and shown["events"][0]["kind"] == "admin"


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path):
    env = {**os.environ, "UNSUBD_CONFIG": str(EXAMPLE_TOML)}
    many = tmp_path / "mail"
    many.mkdir()
    for i in range(300):
        (many / f"{i}.eml").write_bytes(dsn(f"u{i}@kommun-vast.example"))
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "classify", "--json", str(many)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                         # like `| head -1`
    _, err = proc.communicate(timeout=120)
    assert b"Broken pipe" not in err and b"Traceback" not in err


def test_an_operator_opts_a_person_back_in_with_a_reason_and_is_recorded(tmp_path: Path):
    import sqlite3

    db = tmp_path / "u.db"
    csv = tmp_path / "c.csv"
    csv.write_text("address,name,units\nanna.berg@example.se,Anna Berg,alumni\n")
    assert unsubd("contacts", "import", str(csv), db=db).returncode == 0
    _apply_optout(db, "anna.berg@example.se", ("alumni",), ("email",))      # she replied "avregistrera mig"
    view = json.loads(unsubd("contacts", "show", "anna.berg@example.se", "--json", db=db).stdout)
    assert {"unit": "alumni", "channel": "email", "state": "unsubscribed"} in view["preferences"]
    # Global options before the command, command options after it.
    done = unsubd("--operator", "kim.k", "contacts", "opt-in", "anna.berg@example.se", "--units", "alumni",
                  "--channels", "email", "--reason", "asked at the alumni desk", db=db)
    assert done.returncode == 0, done.stderr
    assert "opted back in" in done.stdout
    view = json.loads(unsubd("contacts", "show", "anna.berg@example.se", "--json", db=db).stdout)
    assert {"unit": "alumni", "channel": "email", "state": "subscribed"} in view["preferences"]
    with sqlite3.connect(db) as conn:
        rows = [(kind, json.loads(evidence)) for kind, evidence in conn.execute("SELECT kind, evidence FROM event")]
    assert [e for kind, e in rows if e.get("operator") == "kim.k"], rows     # who did it is recorded
    assert any("asked at the alumni desk" in json.dumps(e) for _kind, e in rows)

    no_reason = unsubd("contacts", "opt-in", "anna.berg@example.se", "--units", "alumni", db=db)
    assert no_reason.returncode == 2
    bad_unit = unsubd("contacts", "opt-in", "anna.berg@example.se", "--units", "no-such-unit", "--reason", "x", db=db)
    assert bad_unit.returncode == 2 and "no-such-unit" in bad_unit.stderr


def _apply_optout(db: Path, address: str, units: tuple[str, ...], channels: tuple[str, ...]) -> None:
    """An opt-out applied through the one writer, as the consumer applies a reply's."""
    import asyncio
    from datetime import datetime, timezone

    from handlers.model import Action, ActionType, Decision, Kind
    from handlers.state.apply import apply
    from worker.store.db import Database

    async def run() -> None:
        database = Database.connect(f"sqlite+aiosqlite:///{db}")
        now = datetime.now(timezone.utc)
        act = Action(ActionType.UNSUBSCRIBE, address, units=units, channels=channels)
        await apply(Decision(item_id=f"test-{address}", kind=Kind.OPTOUT, actions=(act,), reason="test opt-out"),
                    database.unit_of_work(), now)
        await database.close()

    asyncio.run(run())


def test_change_address_keeps_the_person_and_says_why_it_refuses(tmp_path: Path):
    """Rectification (issue 23 item 4) as a real subprocess: 0 done, 1 the old address is unknown,
    2 refused. Every refusal and its exit code: tests/integration/test_rectify.py (in-process)."""
    import sqlite3

    db = tmp_path / "u.db"
    csv = tmp_path / "c.csv"
    csv.write_text("address,name,units\nanna.berg@example.se,Anna Berg,alumni;events\ncarl@example.se,Carl,alumni\n")
    assert unsubd("contacts", "import", str(csv), db=db).returncode == 0
    _apply_optout(db, "anna.berg@example.se", ("alumni",), ("email",))
    before = json.loads(unsubd("contacts", "show", "anna.berg@example.se", "--json", db=db).stdout)

    taken = unsubd("contacts", "change-address", "anna.berg@example.se", "carl@example.se", "--reason", "x", db=db)
    assert taken.returncode == 2 and "belongs to another contact" in taken.stderr
    done = unsubd("contacts", "change-address", "anna.berg@example.se", "Anna@Nytt.Example.se",
                  "--reason", "new address, ticket 4711", "--operator", "kim.k", db=db)
    assert done.returncode == 0, done.stderr
    assert "address changed" in done.stdout
    after = json.loads(unsubd("contacts", "show", "anna@nytt.example.se", "--json", db=db).stdout)
    assert after["contact_id"] == before["contact_id"] and after["name"] == "Anna Berg"
    assert after["preferences"] == before["preferences"] and sorted(after["units"]) == ["alumni", "events"]
    with sqlite3.connect(db) as conn:
        (evidence,) = conn.execute("SELECT evidence FROM event WHERE source = 'rectification'").fetchone()
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE routing_key = 'contact.address_changed'").fetchone()
    assert json.loads(evidence)["operator"] == "kim.k"
    assert {k: json.loads(payload)[k] for k in ("old_address", "new_address", "operator")} == {
        "old_address": "anna.berg@example.se", "new_address": "anna@nytt.example.se", "operator": "kim.k"}
    again = unsubd("contacts", "change-address", "anna.berg@example.se", "anna@nytt.example.se", "--reason", "x",
                   db=db)
    assert again.returncode == 1 and "no contact has the old address" in again.stderr
