"""The operator console (issue 24) over HTTP: sign-in, sessions, CSRF, roles, the actions
and the pages, in process with the aiohttp test client, on SQLite and PostgreSQL (the
`database` fixture runs each test on both)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

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


@pytest.fixture
async def console(database):
    database.tombstone_keys = KEYRING
    clock = Clock()
    settings = settings_for(database)
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
                 "/console/rights", "/console/dashboard", "/console/contact?address=nobody%40example.se"):
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
