"""The operator console (issue 24) over HTTP: sign-in, sessions, CSRF, roles, the actions
and the pages, in process with the aiohttp test client, on SQLite and PostgreSQL (the
`database` fixture runs each test on both)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from handlers.model import Action, ActionType, Decision, Inbound, Kind
from handlers.state.apply import apply
from worker.console import accounts
from worker.ingress.http import build_app
from worker.store import users
from worker.store.models import (ConsoleSession, ConsoleUser, Event, InboundItem, Preference, ReviewItem,
                                 Suppression)
from tests.conftest import make_settings
from tests.integration.test_links_http import KEYS_ENV, KEYRING, add_contact, no_metrics

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Console:
    """A test client on the whole HTTP app (the console is mounted at /console/), with a clock."""

    def __init__(self, client: TestClient, database: Any, clock: Clock, settings: Any) -> None:
        self.client, self.db, self.clock, self.settings = client, database, clock, settings

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def sign_in(self, name: str, password: str = PASSWORD) -> Any:
        page = await self.client.get("/console/login")
        token = LOGIN_TOKEN.search(await page.text()).group(1)
        return await self.client.post("/console/login", data={"name": name, "password": password,
                                                                "login_token": token, "next": "/console/"},
                                      headers={"Origin": self.origin}, allow_redirects=False)

    async def csrf(self, path: str = "/console/") -> str:
        page = await self.client.get(path)
        assert page.status == 200, await page.text()
        return CSRF.search(await page.text()).group(1)

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]], *, csrf: str | None = "auto",
                   origin: str | None = "auto") -> Any:
        if csrf == "auto":
            csrf = await self.csrf()
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf is not None:
            fields.append(("csrf", csrf))
        headers = {"Origin": self.origin if origin == "auto" else origin} if origin is not None else {}
        return await self.client.post(path, data=fields, headers=headers, allow_redirects=False)


async def add_user(database: Any, name: str, role: str, password: str = PASSWORD) -> users.User:
    return await users.add_user(database, name, accounts.hash_password(password), role, T0)


def settings_for(database: Any, **env: str) -> Any:
    return make_settings(str(database.engine.url.render_as_string(hide_password=False)), **KEYS_ENV, **env)


@contextlib.asynccontextmanager
async def open_console(database: Any, **env: str) -> AsyncIterator[Console]:
    """The whole HTTP app on a real socket, with a test clock and settings `env`."""
    database.tombstone_keys = KEYRING
    clock = Clock()
    settings = settings_for(database, **env)
    server = TestServer(build_app(settings, database.sessions, no_metrics, db=database, clock=clock),
                        host="127.0.0.1")
    await server.start_server()
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{server.port}"])
    client = TestClient(server, cookie_jar=jar)
    await client.start_server()
    try:
        yield Console(client, database, clock, settings)
    finally:
        await client.close()


async def second_client(console: Console) -> Console:
    """Another browser on the same server and clock, with its own cookies. Close it with
    `await other.client.session.close()` (closing the TestClient would stop the server)."""
    server = console.client.server
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{server.port}"])
    client = TestClient(server, cookie_jar=jar)
    await client.start_server()
    return Console(client, console.db, console.clock, console.settings)


@pytest.fixture
async def console(database):
    async with open_console(database) as opened:
        yield opened


async def count(database: Any, model: Any, *where: Any) -> int:
    async with database.sessions() as s:
        return await s.scalar(select(func.count()).select_from(model).where(*where))


async def suppress(database: Any, address: str, reason: str = "hard_bounce", unit: str = "alumni",
                   at: datetime = T0, item: str | None = None) -> None:
    """A hard bounce (or, with reason complaint, a complaint) that suppresses `address`."""
    kind = Kind.COMPLAINT if reason == "complaint" else Kind.BOUNCE
    decision = Decision(item_id=item or f"{kind}-{address}-{at.isoformat()}", kind=kind,
                        reason="dsn: 1 failed (5.1.1 user_unknown)",
                        actions=(Action(ActionType.SUPPRESS, address, status="5.1.1", reason="user_unknown",
                                        hard=True),),
                        evidence={"unit": unit, "recipients": [{"address": address, "action": "failed",
                                                                "status": "5.1.1", "reason": "user_unknown",
                                                                "hard": True,
                                                                "diagnostic": "550 5.1.1 mailbox does not exist"}]})
    await apply(decision, database.unit_of_work(), at)


async def held_reply(database: Any, address: str, body: str, at: datetime = T0) -> int:
    """A received message held for review (kept raw in inbound_item, as the consumer keeps it)."""
    raw = (f"From: {address}\r\nTo: alumni@mail.example.org\r\nSubject: =?utf-8?q?sluta_<script>?=\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
    item = Inbound.from_smtp(raw, address, ("alumni@mail.example.org",), at)
    async with database.transaction() as s:
        s.add(InboundItem(id=item.id, raw=raw, mail_from=address, rcpt_tos=list(item.rcpt_tos), source="smtp",
                          received_at=at, status="done", attempts=1, available_at=at, updated_at=at))
    await apply(Decision(item_id=item.id, kind=Kind.OPTOUT, review=True, reason="unclear request",
                         actions=(Action(ActionType.UNSUBSCRIBE, address),),
                         evidence={"from": address, "matched": ["sluta skicka"]}), database.unit_of_work(), at)
    async with database.sessions() as s:
        return await s.scalar(select(ReviewItem.id).order_by(ReviewItem.id.desc()).limit(1))


async def events_by(database: Any, operator: str) -> list[Event]:
    async with database.sessions() as s:
        return [e for e in (await s.scalars(select(Event).order_by(Event.occurred_at))).all()
                if (e.evidence or {}).get("operator") == operator]


# -- sign-in, sessions, lockout ---------------------------------------------------------------------


async def test_sign_in_and_out(console):
    await add_user(console.db, "olle", "operator")
    first = await console.client.get("/console/", allow_redirects=False)
    assert first.status == 303 and first.headers["Location"].startswith("/console/login?next=")
    r = await console.sign_in("olle")
    assert r.status == 303 and r.headers["Location"] == "/console/"
    cookie = r.cookies["unsubd_console"].value
    async with console.db.sessions() as s:
        stored = (await s.scalars(select(ConsoleSession))).all()
    assert [x.id for x in stored] == [hashlib.sha256(cookie.encode()).hexdigest()]   # only its hash
    assert stored[0].expires_at == T0 + timedelta(hours=console.settings.console.session_hours)
    page = await console.client.get("/console/")
    assert page.status == 200 and "Signed in as olle (operator)" in await page.text() \
        or "Inloggad som olle (handläggare)" in await page.text()
    out = await console.post("/console/logout", {})
    assert out.status == 303 and out.headers["Location"] == "/console/login"
    assert await count(console.db, ConsoleSession) == 0
    again = await console.client.get("/console/", allow_redirects=False, cookies={"unsubd_console": cookie})
    assert again.status == 303                     # the old cookie is worth nothing now


async def test_the_session_cookie_is_secure_httponly_strict_and_scoped(console):
    await add_user(console.db, "olle", "viewer")
    r = await console.sign_in("olle")
    header = next(h for h in r.headers.getall("Set-Cookie") if h.startswith("unsubd_console="))
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
    assert "secure" in attributes and "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/console/"
    value = header.split(";")[0].split("=", 1)[1]
    assert len(value) >= 43                        # 32 random bytes, base64url
    # The pages are never cached, never framed, and allow no script.
    page = await console.client.get("/console/")
    assert page.headers["Cache-Control"] == "no-store"
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "default-src 'none'" in csp


async def test_a_session_expires(console):
    await add_user(console.db, "olle", "viewer")
    await console.sign_in("olle")
    assert (await console.client.get("/console/", allow_redirects=False)).status == 200
    console.clock.now = T0 + timedelta(hours=console.settings.console.session_hours, seconds=1)
    assert (await console.client.get("/console/", allow_redirects=False)).status == 303


async def test_five_wrong_passwords_lock_the_account(console):
    await add_user(console.db, "olle", "operator")
    wrong = []
    for _ in range(5):
        r = await console.sign_in("olle", "not the password!")
        assert r.status == 401
        wrong.append(await r.text())
    async with console.db.sessions() as s:
        user = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "olle"))
    assert user.locked_until == T0 + timedelta(minutes=console.settings.console.lockout_minutes)
    # Locked: the right password gets the same answer as a wrong one, or an unknown name.
    right = await console.sign_in("olle")
    nobody = await console.sign_in("nobody-here")
    strip = lambda text: LOGIN_TOKEN.sub("", text)                   # noqa: E731
    assert right.status == nobody.status == 401
    assert strip(await right.text()) == strip(wrong[-1]) == strip(await nobody.text())
    assert await count(console.db, ConsoleSession) == 0
    # After the lockout the right password works again.
    console.clock.now = T0 + timedelta(minutes=console.settings.console.lockout_minutes, seconds=1)
    assert (await console.sign_in("olle")).status == 303


async def test_four_wrong_passwords_then_the_right_one_starts_the_count_again(console):
    await add_user(console.db, "olle", "operator")
    for _ in range(4):
        assert (await console.sign_in("olle", "not the password!")).status == 401
    assert (await console.sign_in("olle")).status == 303
    async with console.db.sessions() as s:
        user = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "olle"))
    assert user.failed_logins == 0 and user.locked_until is None


async def test_a_disabled_user_cannot_sign_in_and_loses_the_session(console):
    await add_user(console.db, "olle", "operator")
    assert (await console.sign_in("olle")).status == 303
    assert await users.set_disabled(console.db, "olle", True, T0)
    assert (await console.client.get("/console/", allow_redirects=False)).status == 303
    assert (await console.sign_in("olle")).status == 401


async def test_the_sign_in_form_needs_its_token_and_our_origin(console):
    await add_user(console.db, "olle", "operator")
    no_token = await console.client.post("/console/login", data={"name": "olle", "password": PASSWORD},
                                         allow_redirects=False)
    assert no_token.status == 403
    page = await console.client.get("/console/login")
    token = LOGIN_TOKEN.search(await page.text()).group(1)
    foreign = await console.client.post("/console/login", data={"name": "olle", "password": PASSWORD,
                                                                 "login_token": token},
                                        headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert foreign.status == 403
    assert await count(console.db, ConsoleSession) == 0


async def test_after_sign_in_only_a_console_path_is_followed(console):
    await add_user(console.db, "olle", "operator")
    page = await console.client.get("/console/login")
    token = LOGIN_TOKEN.search(await page.text()).group(1)
    r = await console.client.post("/console/login", data={"name": "olle", "password": PASSWORD, "login_token": token,
                                                           "next": "//evil.example/console/"},
                                  headers={"Origin": console.origin}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/console/"


# -- CSRF and origin ----------------------------------------------------------------------------------


async def test_a_form_without_or_with_a_wrong_token_is_refused_and_changes_nothing(console):
    await add_user(console.db, "olle", "operator")
    await add_user(console.db, "eva", "operator")
    await suppress(console.db, "anna@example.se")
    await console.sign_in("eva")
    evas = await console.csrf()
    await console.post("/console/logout", {}, csrf=evas)
    await console.sign_in("olle")
    before = await count(console.db, Event)
    form = {"address": "anna@example.se", "reason": "she asked"}
    for token in (None, "", "0" * 64, evas):               # none, empty, made up, another session's
        r = await console.post("/console/contact/release", form, csrf=token)
        assert r.status == 403
        text = await r.text()
        assert "Nothing was changed" in text or "Inget har ändrats" in text
    assert await count(console.db, Event) == before
    assert await count(console.db, Suppression, Suppression.active.is_(True)) == 1


async def test_a_form_posted_from_another_site_is_refused(console):
    await add_user(console.db, "olle", "operator")
    await suppress(console.db, "anna@example.se")
    await console.sign_in("olle")
    token = await console.csrf()
    before = await count(console.db, Event)
    for origin in ("https://evil.example", "null", f"{console.origin}.evil.example"):
        r = await console.post("/console/contact/release", {"address": "anna@example.se", "reason": "x"},
                               csrf=token, origin=origin)
        assert r.status == 403
    r = await console.client.post("/console/contact/release", data={"address": "anna@example.se", "reason": "x",
                                                                     "csrf": token},
                                  headers={"Referer": "https://evil.example/page"}, allow_redirects=False)
    assert r.status == 403
    assert await count(console.db, Event) == before


# -- roles --------------------------------------------------------------------------------------------


ACTIONS = [
    ("/console/contact/release", {"address": "anna@example.se", "reason": "asked"}),
    ("/console/contact/opt-in", [("address", "anna@example.se"), ("unit", "*"), ("channel", "email"),
                                 ("reason", "asked by phone")]),
    ("/console/contact/note", {"address": "anna@example.se", "text": "called"}),
    ("/console/review/{review}", [("resolution", "optout"), ("unit", "*"), ("channel", "email")]),
    ("/console/parked/replay", {"all": "1"}),
    ("/console/rights/export", {"address": "anna@example.se"}),
    ("/console/rights/erase", {"address": "anna@example.se", "reason": "asked"}),
]


async def test_a_viewer_cannot_post_any_action(console):
    await add_user(console.db, "vera", "viewer")
    await suppress(console.db, "anna@example.se")
    review = await held_reply(console.db, "bo@example.se", "sluta skicka?")
    await console.sign_in("vera")
    token = await console.csrf()
    before = (await count(console.db, Event), await count(console.db, Preference))
    for path, form in ACTIONS:
        r = await console.post(path.format(review=review), form, csrf=token)
        assert r.status == 403, path
    assert (await count(console.db, Event), await count(console.db, Preference)) == before
    assert await count(console.db, Suppression, Suppression.active.is_(True)) == 1
    assert await count(console.db, ReviewItem, ReviewItem.resolved_at.is_(None)) == 1
    # And the pages offer a viewer no action at all.
    for page in ("/console/contact?address=anna%40example.se", "/console/review", "/console/rights",
                 "/console/parked"):
        text = await (await console.client.get(page)).text()
        assert 'method="post"' not in text.replace('action="/console/logout"', "").split("</header>", 1)[1], page


async def test_an_operator_cannot_export_or_erase(console):
    await add_user(console.db, "olle", "operator")
    await suppress(console.db, "anna@example.se")
    await console.sign_in("olle")
    token = await console.csrf()
    for path, form in ACTIONS[-2:]:
        assert (await console.post(path, form, csrf=token)).status == 403
    assert await count(console.db, Suppression) == 1


# -- actions ------------------------------------------------------------------------------------------


async def test_operator_actions_are_events_that_name_the_user(console):
    await add_user(console.db, "olle", "operator")
    await add_contact(console.db, "anna@example.se")
    await apply(Decision(item_id="optout-1", kind=Kind.OPTOUT, reason="opt-out by email",
                         actions=(Action(ActionType.UNSUBSCRIBE, "anna@example.se", units=("alumni",),
                                         channels=("email",)),)), console.db.unit_of_work(), T0)
    await suppress(console.db, "anna@example.se")
    review = await held_reply(console.db, "bo@example.se", "sluta skicka?")
    await console.sign_in("olle")
    console.clock.now = T0 + timedelta(minutes=1)

    r = await console.post("/console/contact/release", {"address": "Anna@Example.se", "reason": "new mailbox"})
    assert r.status == 303 and "done=released" in r.headers["Location"]
    assert await count(console.db, Suppression, Suppression.active.is_(True)) == 0

    r = await console.post("/console/contact/opt-in", [("address", "anna@example.se"), ("unit", "alumni"),
                                                       ("channel", "email"), ("reason", "asked by phone")])
    assert r.status == 303
    async with console.db.sessions() as s:
        prefs = {(p.unit, p.channel): p.state for p in (await s.scalars(select(Preference))).all()}
    assert prefs == {("alumni", "email"): "subscribed"}

    r = await console.post("/console/contact/note", {"address": "anna@example.se", "text": "Ringde <b>3 mars</b>"})
    assert r.status == 303
    r = await console.post(f"/console/review/{review}", [("resolution", "optout"), ("address", "bo@example.se"),
                                                         ("unit", "*"), ("channel", "email"), ("note", "clear")])
    assert r.status == 303 and r.headers["Location"] == "/console/review?done=settled"
    async with console.db.sessions() as s:
        item = await s.get(ReviewItem, review)
    assert item.resolution == "optout"

    done = await events_by(console.db, "console:olle")
    assert [(e.kind, e.source) for e in done] == [("admin", "admin"), ("admin", "admin"), ("admin", "note"),
                                                  ("admin", "review")]
    assert done[0].evidence["operator_reason"] == "new mailbox"
    assert done[2].evidence["note"] == "Ringde <b>3 mars</b>"

    # The timeline shows the note (as text) and who wrote it.
    page = await (await console.client.get("/console/contact", params={"address": "anna@example.se",
                                                                        "lang": "en"})).text()
    assert "Ringde &lt;b&gt;3 mars&lt;/b&gt;" in page and "<b>3 mars" not in page
    assert "by console:olle" in page
    # Settling twice is refused with a message, and changes nothing.
    before = await count(console.db, Event)
    r = await console.post(f"/console/review/{review}", [("resolution", "ignore")])
    assert r.status == 409 and "already resolved" in await r.text()
    assert await count(console.db, Event) == before


async def test_bad_input_gets_a_message_on_the_page(console):
    await add_user(console.db, "olle", "operator")
    await console.sign_in("olle")
    cases = [
        (await console.client.get("/console/contact", params={"address": "not an address", "lang": "en"}), 400,
         "not an email address"),
        (await console.client.get("/console/contact", params={"address": "nobody@example.se", "lang": "en"}), 404,
         "We hold no contact"),
        (await console.client.get("/console/suppressions", params={"since": "31/12/2026", "lang": "en"}), 400,
         "YYYY-MM-DD"),
        (await console.client.get("/console/suppressions", params={"since": "2026-05-01", "until": "2026-04-01",
                                                                   "lang": "en"}), 400, "end date"),
        (await console.client.get("/console/no-such-page?lang=en"), 404, "no such page"),
        (await console.post("/console/review/999999", [("resolution", "ignore")]), 404, "999999"),
        (await console.post("/console/contact/release", {"address": "anna@example.se", "reason": " "}), 400,
         "Nothing was changed"),
        (await console.post("/console/contact/opt-in", {"address": "anna@example.se", "reason": "x"}), 400,
         "tick at least one unit"),
        (await console.post("/console/contact/note", {"address": "@", "text": "x"}), 400, "not an email address"),
    ]
    for r, status, words in cases:
        text = await r.text()
        assert r.status == status, (status, text[:300])
        assert words.lower() in text.lower(), words
        assert "Traceback" not in text and r.content_type == "text/html"


async def test_the_review_page_shows_evidence_and_the_raw_message_as_text(console):
    await add_user(console.db, "vera", "viewer")
    await held_reply(console.db, "bo@example.se", "sluta skicka <script>alert(1)</script> <img src=x onerror=y>")
    await suppress(console.db, "cilla@example.se")
    await console.sign_in("vera")
    page = await (await console.client.get("/console/review?lang=en")).text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "sluta_&lt;script&gt;" not in page and "sluta &lt;script&gt;" in page       # the Subject decoded
    assert "sluta skicka" in page and "unclear request" in page
    contact = await (await console.client.get("/console/contact?address=cilla%40example.se&lang=en")).text()
    assert "5.1.1" in contact and "550 5.1.1 mailbox does not exist" in contact          # why it was suppressed


async def test_the_csv_export_matches_the_database(console):
    await add_user(console.db, "vera", "viewer")
    await suppress(console.db, "a@example.se", "hard_bounce", "alumni", T0 - timedelta(days=3))
    await suppress(console.db, "b@example.se", "hard_bounce", "events", T0 - timedelta(days=1))
    await suppress(console.db, "c@example.se", "complaint", "alumni", T0)
    await suppress(console.db, "d,\"q\"@example.se", "hard_bounce", "alumni", T0)
    await console.sign_in("vera")

    async def exported(**query: str) -> list[dict[str, str]]:
        r = await console.client.get("/console/suppressions.csv", params=query)
        assert r.status == 200 and r.content_type == "text/csv"
        assert r.headers["Content-Disposition"].startswith("attachment")
        return list(csv.DictReader(io.StringIO(await r.text())))

    async with console.db.sessions() as s:
        rows = (await s.execute(select(Suppression.address, Suppression.reason, Suppression.created_at)
                                .where(Suppression.active.is_(True)))).all()
    everything = await exported()
    assert sorted((r["address"], r["reason"], r["since"]) for r in everything) == \
        sorted((a, reason, at.isoformat()) for a, reason, at in rows)
    assert {r["address"] for r in await exported(reason="hard_bounce", unit="alumni")} == \
        {a for a, reason, _ in rows if reason == "hard_bounce"} - {"b@example.se"}
    since = T0 - timedelta(days=1)
    assert {r["address"] for r in await exported(since=since.date().isoformat())} == \
        {a for a, _, at in rows if at >= since}
    page = await (await console.client.get("/console/suppressions?reason=complaint&lang=en")).text()
    assert "1 suppressed addresses" in page and "c@example.se" in page and "a@example.se" not in page


async def test_the_csv_export_never_hands_a_spreadsheet_a_formula(console):
    """An address is whatever a bounce said it was, and may begin with "=" or "+" (RFC 5322
    atext): in the downloaded CSV such a cell starts with an apostrophe."""
    await add_user(console.db, "vera", "viewer")
    for address in ("=hyperlink(x)@example.se", "+46701234567@example.se", "-x@example.se", "ok@example.se"):
        await suppress(console.db, address, "hard_bounce", "alumni", T0)
    await console.sign_in("vera")
    r = await console.client.get("/console/suppressions.csv")
    cells = [row["address"] for row in csv.DictReader(io.StringIO(await r.text()))]
    assert sorted(cells) == sorted(["'=hyperlink(x)@example.se", "'+46701234567@example.se", "'-x@example.se",
                                    "ok@example.se"])


async def test_parked_items_are_listed_and_replayed(console):
    await add_user(console.db, "olle", "operator")
    async with console.db.transaction() as s:
        s.add(InboundItem(id="parked-1", raw=b"garbage", mail_from=None, rcpt_tos=[], source="smtp", received_at=T0,
                          status="failed", attempts=5, last_error="ParseError: <broken>", available_at=T0,
                          updated_at=T0))
    await console.sign_in("olle")
    page = await (await console.client.get("/console/parked?lang=en")).text()
    assert "ParseError: &lt;broken&gt;" in page
    r = await console.post("/console/parked/replay", [("id", "parked-1")])
    assert r.status == 303 and r.headers["Location"] == "/console/parked?done=1"
    async with console.db.sessions() as s:
        assert (await s.get(InboundItem, "parked-1")).status == "pending"


async def test_an_admin_exports_and_erases_for_a_rights_request(console):
    await add_user(console.db, "ada", "admin")
    await add_contact(console.db, "anna@example.se")
    await suppress(console.db, "anna@example.se")
    await console.sign_in("ada")
    r = await console.post("/console/rights/export", {"address": "anna@example.se"})
    assert r.status == 200 and r.content_type == "application/json"
    data = json.loads(await r.text())
    assert data["address"] == "anna@example.se" and data["suppression"]
    r = await console.post("/console/rights/erase", {"address": "anna@example.se", "reason": "asked by letter"})
    assert r.status == 303 and "done=erased" in r.headers["Location"]
    erased = await events_by(console.db, "console:ada")
    assert len(erased) == 1
    page = await (await console.client.get("/console/contact?address=anna%40example.se&lang=en")).text()
    assert "The address is erased" in page


async def test_every_page_has_a_title_a_heading_a_skip_link_and_a_language_switch(console):
    await add_user(console.db, "ada", "admin")
    await console.sign_in("ada")
    for path in ("/console/", "/console/review", "/console/contact", "/console/suppressions", "/console/parked",
                 "/console/rights", "/console/dashboard", "/console/users",
                 "/console/contact?address=nobody%40example.se"):
        for lang, word in (("sv", "Logga ut"), ("en", "Sign out")):
            r = await console.client.get(path, params={"lang": lang})
            text = await r.text()
            assert r.status == (404 if "nobody" in path else 200), path
            assert f'<html lang="{lang}">' in text and word in text
            assert re.search(r"<title>[^<]+</title>", text) and text.count("<h1>") == 1
            assert '<a class="skip" href="#main">' in text and 'id="main"' in text
            ids = re.findall(r'<input[^>]* id="([^"]+)"', text) + re.findall(r'<(?:textarea|select)[^>]* id="([^"]+)"',
                                                                             text)
            for field_id in ids:
                assert f'for="{field_id}"' in text, (path, field_id)
    # The language choice is remembered.
    await console.client.get("/console/?lang=en")
    assert "Sign out" in await (await console.client.get("/console/review")).text()
    # The login page takes Accept-Language.
    async with aiohttp.ClientSession() as fresh:
        r = await fresh.get(console.client.make_url("/console/login"), headers={"Accept-Language": "en-GB,en;q=0.9"})
        text = await r.text()
    assert '<html lang="en">' in text and "Sign in" in text


async def rights_request(database: Any, address: str, kind: str, deadline: str, at: datetime = T0) -> int:
    """A reply that asks for `kind` (access, erasure, ...), as handlers.replies.rights records it."""
    await apply(Decision(item_id=f"rights-{kind}-{address}", kind=Kind.REPLY, reason=f"asks for {kind}",
                         evidence={"from": address, "rights_request": {"types": [kind], "deadline": deadline}}),
                database.unit_of_work(), at)
    async with database.sessions() as s:
        return await s.scalar(select(ReviewItem.id).where(ReviewItem.kind == "rights_request")
                              .order_by(ReviewItem.id.desc()).limit(1))


async def test_rights_requests_overdue_first_and_fulfilled_by_an_admin(console):
    await add_user(console.db, "ada", "admin")
    await add_user(console.db, "olle", "operator")
    await add_contact(console.db, "anna@example.se")
    await add_contact(console.db, "bo@example.se")
    await suppress(console.db, "bo@example.se")
    later = await rights_request(console.db, "bo@example.se", "erasure", "2026-03-30")
    overdue = await rights_request(console.db, "anna@example.se", "access", "2026-02-27")
    await console.sign_in("olle")
    page = await (await console.client.get("/console/rights?lang=en")).text()
    assert page.index(f"Request {overdue}: access") < page.index(f"Request {later}: erasure")
    assert "3 days late" in page and "/fulfil" not in page                     # an operator cannot
    assert (await console.post(f"/console/rights/{overdue}/fulfil", {})).status == 403
    await console.post("/console/logout", {})

    await console.sign_in("ada")
    r = await console.post(f"/console/rights/{overdue}/fulfil", {"note": "sent by post"})
    assert r.status == 200 and r.content_type == "application/json"
    assert json.loads(await r.text())["export"]["address"] == "anna@example.se"
    r = await console.post(f"/console/rights/{later}/fulfil", {"note": "as asked"})
    assert r.status == 303 and r.headers["Location"] == "/console/rights?done=erased"
    assert await count(console.db, ReviewItem, ReviewItem.kind == "rights_request",
                       ReviewItem.resolved_at.is_(None)) == 0
    assert await count(console.db, Suppression, Suppression.address == "bo@example.se") == 0
    assert {e.kind for e in await events_by(console.db, "console:ada")} >= {"admin"}
    again = await console.post(f"/console/rights/{later}/fulfil", {})
    assert again.status == 409 and "already" in await again.text()


async def test_the_dashboard_tables_hold_the_figures_of_the_database(console):
    await add_user(console.db, "vera", "viewer")
    today = datetime.now(timezone.utc).replace(hour=8, minute=0, second=0, microsecond=0)
    await suppress(console.db, "a@example.se", unit="alumni", at=today)
    await suppress(console.db, "b@example.se", unit="alumni", at=today)
    await suppress(console.db, "c@example.se", unit="events", at=today - timedelta(days=1))
    await suppress(console.db, "d@example.se", "complaint", unit="alumni", at=today)
    await console.sign_in("vera")
    page = await (await console.client.get("/console/dashboard?lang=en&days=7")).text()
    assert page.count("<svg") == 5 and "<title" in page and "0.3 %" in page

    def cell(table: str, day: str, column: int) -> str:
        body = page.split(f'<table id="t-{table}">', 1)[1].split("</table>", 1)[0]
        row = body.split(f'<th scope="row">{day}</th>', 1)[1].split("</tr>", 1)[0]
        return re.findall(r"<td[^>]*>([^<]*)</td>", row)[column]

    async with console.db.sessions() as s:
        hard = (await s.execute(select(Event.occurred_at, Event.actions).where(Event.kind == "bounce"))).all()
    per_day: dict[str, int] = {}
    for at, actions in hard:
        day = at.astimezone(timezone.utc).date().isoformat()
        per_day[day] = per_day.get(day, 0) + sum(1 for a in actions if a["type"] == "suppress")
    for day, n in per_day.items():
        assert cell("bounces", day, 0) == str(n)
    assert cell("complaints", today.date().isoformat(), 0) == "1"
    bad = await console.client.get("/console/dashboard?days=12&lang=en")
    assert bad.status == 400 and "Choose a period" in await bad.text()
    bad = await console.client.get("/console/dashboard?unit=nope&lang=en")
    assert bad.status == 400 and "no unit called nope" in await bad.text()


async def test_an_erasure_takes_the_notes_about_the_address_too(console):
    await add_user(console.db, "ada", "admin")
    await add_contact(console.db, "anna@example.se")
    await console.sign_in("ada")
    assert (await console.post("/console/contact/note", {"address": "anna@example.se",
                                                         "text": "Anna Svensson called from 070-1234567"})).status == 303
    assert (await console.post("/console/rights/erase", {"address": "anna@example.se",
                                                         "reason": "asked by letter"})).status == 303
    async with console.db.sessions() as s:
        events = (await s.scalars(select(Event))).all()
    held = json.dumps([[e.reason, e.evidence, e.actions] for e in events], ensure_ascii=False)
    assert "070-1234567" not in held and "anna@example.se" not in held


async def test_the_console_is_not_under_the_api_keys_and_can_be_turned_off(database):
    keyed = settings_for(database, UNSUBD_API_KEYS='["a-key-of-sixteen-chars"]')
    async with TestClient(TestServer(build_app(keyed, database.sessions, no_metrics, db=database))) as client:
        assert (await client.get("/console/login")).status == 200              # no bearer key needed
        assert (await client.get("/v1/review")).status == 401                   # the API still needs one
    off = settings_for(database, UNSUBD_CONSOLE__ENABLED="false")
    async with TestClient(TestServer(build_app(off, database.sessions, no_metrics, db=database))) as client:
        assert (await client.get("/console/login")).status == 404


# -- the users page (admins) ----------------------------------------------------------------------------


async def stored_user(database: Any, name: str) -> tuple[users.User, str] | None:
    return await users.find_user(database, name)


async def password_works(database: Any, name: str, password: str) -> bool:
    found = await users.find_user(database, name)
    return found is not None and accounts.check_password(found[1], password)[0]


async def test_an_admin_adds_changes_disables_and_resets_users(console, caplog):
    await add_user(console.db, "ada", "admin")
    await console.sign_in("ada")
    page = await (await console.client.get("/console/users?lang=en")).text()
    assert '<a href="/console/users" aria-current="page">Users</a>' in page
    assert re.search(r"<th scope=\"row\" class=\"address\">ada \(you\)</th><td>admin</td><td>active</td>"
                     r"<td>2026-03-02 09:00</td>", page), page                   # last sign-in: T0
    caplog.set_level("INFO", logger="unsubd.console")

    # Added with a password the admin chose: it signs in, and the list shows the user.
    r = await console.post("/console/users/add", {"name": "Olle", "role": "operator", "password": "a password for olle"})
    assert r.status == 303 and r.headers["Location"] == "/console/users?done=added&user=olle"
    assert await password_works(console.db, "olle", "a password for olle")
    page = await (await console.client.get(r.headers["Location"] + "&lang=en")).text()
    assert "The user olle is added." in page and "<td>operator</td><td>active</td><td>never</td>" in page

    # Added with no password: one is made and shown on this answer only.
    r = await console.post("/console/users/add", {"name": "bo", "role": "viewer", "password": ""})
    assert r.status == 200
    shown = re.search(r'<code class="secret" id="generated">([^<]+)</code>', await r.text()).group(1)
    assert len(shown) >= accounts.MIN_PASSWORD and await password_works(console.db, "bo", shown)
    assert shown not in await (await console.client.get("/console/users")).text()

    # A new role, disabled (their sessions end), enabled, a new password (unlocks).
    olle = await second_client(console)
    try:
        assert (await olle.sign_in("olle", "a password for olle")).status == 303
        assert (await console.post("/console/users/role", {"name": "olle", "role": "viewer"})).status == 303
        assert (await stored_user(console.db, "olle"))[0].role == "viewer"
        assert "(viewer)" in await (await olle.client.get("/console/?lang=en")).text()     # at once, same session
        r = await console.post("/console/users/disable", {"name": "olle"})
        assert r.status == 303 and "done=disabled" in r.headers["Location"]
        assert (await olle.client.get("/console/", allow_redirects=False)).status == 303
        assert (await olle.sign_in("olle", "a password for olle")).status == 401
        assert (await console.post("/console/users/enable", {"name": "olle"})).status == 303
        async with console.db.transaction() as s:
            row = await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "olle"))
            row.failed_logins, row.locked_until = 3, T0 + timedelta(hours=1)
        page = await (await console.client.get("/console/users?lang=en")).text()
        assert "locked until 2026-03-02 10:00 UTC" in page
        r = await console.post("/console/users/reset", {"name": "olle", "password": "another password, olle"})
        assert r.status == 303
        user = (await stored_user(console.db, "olle"))[0]
        assert user.locked_until is None and user.failed_logins == 0
        assert await password_works(console.db, "olle", "another password, olle")
        assert not await password_works(console.db, "olle", "a password for olle")
        assert (await olle.sign_in("olle", "another password, olle")).status == 303
    finally:
        await olle.client.session.close()

    # Who did what is in the log; the passwords are not.
    done = [(r.getMessage(), r.__dict__.get("actor"), r.__dict__.get("user")) for r in caplog.records
            if r.getMessage().startswith("console users:")]
    assert done == [("console users: added", "ada", "olle"), ("console users: added", "ada", "bo"),
                    ("console users: role changed", "ada", "olle"), ("console users: disabled", "ada", "olle"),
                    ("console users: enabled", "ada", "olle"), ("console users: password reset", "ada", "olle")]
    assert shown not in caplog.text and "a password for olle" not in caplog.text


async def test_only_an_admin_sees_or_uses_the_users_page(console):
    await add_user(console.db, "ada", "admin")
    for name, role in (("vera", "viewer"), ("olle", "operator")):
        await add_user(console.db, name, role)
        await console.sign_in(name)
        overview = await (await console.client.get("/console/?lang=en")).text()
        assert "/console/users" not in overview                          # no link in the navigation
        r = await console.client.get("/console/users?lang=en")
        text = await r.text()
        assert r.status == 403 and "Only an admin can see and change the console" in text
        assert "ada" not in text.split("</header>", 1)[1]
        token = await console.csrf()
        for path, form in (("/console/users/add", {"name": "eve", "role": "admin", "password": ""}),
                           ("/console/users/role", {"name": name, "role": "admin"}),
                           ("/console/users/reset", {"name": "ada", "password": "taken over now!"}),
                           ("/console/users/disable", {"name": "ada"})):
            r = await console.post(path, form, csrf=token)
            assert r.status == 403 and "Your role may not do that" in await r.text(), path
        await console.post("/console/logout", {}, csrf=token)
    assert await stored_user(console.db, "eve") is None
    assert [(u.name, u.role, u.disabled) for u in await users.list_users(console.db)] == \
        [("ada", "admin", False), ("olle", "operator", False), ("vera", "viewer", False)]
    assert await password_works(console.db, "ada", PASSWORD)


async def test_a_users_form_without_its_token_or_from_another_site_changes_nothing(console):
    await add_user(console.db, "ada", "admin")
    await add_user(console.db, "olle", "operator")
    await console.sign_in("ada")
    token = await console.csrf()
    for csrf, origin in ((None, "auto"), ("0" * 64, "auto"), (token, "https://evil.example")):
        for path, form in (("/console/users/add", {"name": "eve", "role": "admin", "password": ""}),
                           ("/console/users/role", {"name": "olle", "role": "admin"}),
                           ("/console/users/disable", {"name": "olle"}),
                           ("/console/users/reset", {"name": "olle", "password": "taken over now!"})):
            assert (await console.post(path, form, csrf=csrf, origin=origin)).status == 403, (path, csrf, origin)
    assert [(u.name, u.role, u.disabled) for u in await users.list_users(console.db)] == \
        [("ada", "admin", False), ("olle", "operator", False)]


async def test_the_last_admin_cannot_disable_or_demote_themself(console):
    await add_user(console.db, "ada", "admin")
    await add_user(console.db, "olle", "operator")
    await console.sign_in("ada")
    for path, form in (("/console/users/disable", {"name": "ada"}), ("/console/users/role", {"name": "ada",
                                                                                             "role": "operator"})):
        r = await console.post(path + "?lang=en", form)
        assert r.status == 409 and "no admin could sign in then" in await r.text(), path
    assert (await stored_user(console.db, "ada"))[0].role == "admin"
    assert (await console.client.get("/console/users")).status == 200          # still signed in, still admin
    # A disabled admin does not count: making olle admin and disabling him changes nothing.
    assert (await console.post("/console/users/role", {"name": "olle", "role": "admin"})).status == 303
    assert (await console.post("/console/users/disable", {"name": "olle"})).status == 303
    assert (await console.post("/console/users/role", {"name": "ada", "role": "viewer"})).status == 409
    # With another admin who can sign in, ada may step down.
    assert (await console.post("/console/users/enable", {"name": "olle"})).status == 303
    r = await console.post("/console/users/role", {"name": "ada", "role": "operator"})
    assert r.status == 303
    assert (await console.client.get("/console/users")).status == 403         # her role is read afresh


async def test_bad_input_on_the_users_page_gets_a_message(console):
    await add_user(console.db, "ada", "admin")
    await console.sign_in("ada")
    cases = [
        ("/console/users/add", {"name": "bo ek", "role": "viewer", "password": ""}, 400, "a user name has 1 to 56"),
        ("/console/users/add", {"name": "bo", "role": "root", "password": ""}, 400, "choose viewer, operator or admin"),
        ("/console/users/add", {"name": "bo", "role": "viewer", "password": "short"}, 400, "at least 12 characters"),
        ("/console/users/add", {"name": "ada", "role": "viewer", "password": ""}, 409, "called ada already"),
        ("/console/users/disable", {"name": "nobody"}, 404, "no user called nobody"),
        ("/console/users/reset", {"name": "nobody", "password": ""}, 404, "no user called nobody"),
        ("/console/users/role", {"name": "nobody", "role": "viewer"}, 404, "no user called nobody"),
    ]
    for path, form, status, words in cases:
        r = await console.post(path + "?lang=en", form)
        text = await r.text()
        assert r.status == status, (path, form, text[:300])
        assert words.lower() in text.lower(), (words, text[:2000])
        assert "Traceback" not in text
    assert [u.name for u in await users.list_users(console.db)] == ["ada"]


# -- sessions: last use, idle timeout, ended by reset ------------------------------------------------------


async def last_seen(database: Any) -> list[datetime]:
    async with database.sessions() as s:
        return [x.last_seen_at for x in (await s.scalars(select(ConsoleSession))).all()]


async def test_last_seen_is_written_at_most_once_a_minute(console):
    await add_user(console.db, "olle", "viewer")
    await console.sign_in("olle")
    assert await last_seen(console.db) == [T0]
    for seconds in (10, 30, 59):
        console.clock.now = T0 + timedelta(seconds=seconds)
        assert (await console.client.get("/console/", allow_redirects=False)).status == 200
        assert await last_seen(console.db) == [T0]
    console.clock.now = T0 + timedelta(seconds=61)
    await console.client.get("/console/")
    assert await last_seen(console.db) == [T0 + timedelta(seconds=61)]


async def test_an_idle_session_ends_and_its_user_is_told_to_sign_in_again(console):
    await add_user(console.db, "olle", "operator")
    await suppress(console.db, "anna@example.se")
    await console.sign_in("olle")
    idle = timedelta(minutes=console.settings.console.session_idle_minutes)
    assert idle == timedelta(minutes=30)
    # Used every 20 minutes it lives on, past the idle time counted from sign-in.
    for n in (1, 2, 3):
        console.clock.now = T0 + n * timedelta(minutes=20)
        assert (await console.client.get("/console/", allow_redirects=False)).status == 200
    token = await console.csrf()
    console.clock.now += idle
    r = await console.post("/console/contact/release?lang=en", {"address": "anna@example.se", "reason": "x"},
                           csrf=token)
    assert r.status == 403 and "you were signed out after 30 minutes without activity" in await r.text()
    assert await count(console.db, ConsoleSession) == 0
    assert await count(console.db, Suppression, Suppression.active.is_(True)) == 1
    # The next page sends them to sign in, with the reason.
    await add_user(console.db, "vera", "viewer")
    await console.sign_in("vera")
    console.clock.now += idle + timedelta(seconds=1)
    r = await console.client.get("/console/review?lang=en", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/console/login?next=/console/review")
    assert "ended=idle" in r.headers["Location"]
    page = await (await console.client.get(r.headers["Location"] + "&lang=en")).text()
    assert "You were signed out after 30 minutes without activity." in page


async def test_an_idle_timeout_setting_is_used(database):
    async with open_console(database, UNSUBD_CONSOLE__SESSION_IDLE_MINUTES="5") as console:
        await add_user(console.db, "olle", "viewer")
        await console.sign_in("olle")
        console.clock.now = T0 + timedelta(minutes=4, seconds=59)
        assert (await console.client.get("/console/", allow_redirects=False)).status == 200
        console.clock.now += timedelta(minutes=5)
        assert (await console.client.get("/console/", allow_redirects=False)).status == 303


async def test_a_password_reset_ends_the_users_other_sessions(console):
    await add_user(console.db, "ada", "admin")
    await add_user(console.db, "olle", "operator")
    await console.sign_in("ada")
    other_ada, olle = await second_client(console), await second_client(console)
    try:
        assert (await other_ada.sign_in("ada")).status == 303
        assert (await olle.sign_in("olle")).status == 303
        assert await count(console.db, ConsoleSession) == 3
        # Ada sets her own password: her other browser is signed out, this one is not.
        assert (await console.post("/console/users/reset", {"name": "ada", "password": "ada's new password"})
                ).status == 303
        assert (await console.client.get("/console/users", allow_redirects=False)).status == 200
        assert (await other_ada.client.get("/console/", allow_redirects=False)).status == 303
        assert (await olle.client.get("/console/", allow_redirects=False)).status == 200
        # Olle's new password ends his session.
        assert (await console.post("/console/users/reset", {"name": "olle", "password": ""})).status == 200
        assert (await olle.client.get("/console/", allow_redirects=False)).status == 303
        assert await count(console.db, ConsoleSession) == 1
    finally:
        await other_ada.client.session.close()
        await olle.client.session.close()


# -- the per-client sign-in limit --------------------------------------------------------------------------


async def test_sign_in_attempts_from_one_client_are_limited(database):
    from worker.ingress.metrics import CONSOLE_SIGN_IN_LIMITED

    async with open_console(database, UNSUBD_CONSOLE__SIGNIN_BURST="3",
                            UNSUBD_CONSOLE__SIGNIN_PER_MINUTE="2") as console:
        await add_user(console.db, "olle", "operator")
        before = CONSOLE_SIGN_IN_LIMITED.value
        for name in ("olle", "anyone", "someone"):                 # three tries, any names
            assert (await console.sign_in(name, "not the password")).status == 401
        r = await console.sign_in("olle")                          # the right password, but too many tries
        text = await r.text()
        assert r.status == 429 and r.headers["Retry-After"] == "30"
        assert "Too many sign-in attempts" in text or "För många inloggningsförsök" in text
        assert "Traceback" not in text and await count(console.db, ConsoleSession) == 0
        assert CONSOLE_SIGN_IN_LIMITED.value == before + 1
        async with database.sessions() as s:                       # the account's own count did not move
            assert (await s.scalar(select(ConsoleUser).where(ConsoleUser.name == "olle"))).failed_logins == 1
        metrics = await (await console.client.get("/metrics")).text()
        assert f"unsubd_console_sign_in_limited_total {float(before + 1)}" in metrics
        # Half a minute later one attempt is back (2 a minute), and only one.
        console.clock.now = T0 + timedelta(seconds=30)
        assert (await console.sign_in("olle")).status == 303
        other = await second_client(console)                       # another browser, the same address
        try:
            assert (await other.sign_in("olle")).status == 429
        finally:
            await other.client.session.close()
        assert CONSOLE_SIGN_IN_LIMITED.value == before + 2
