"""Unsubscribe links over HTTP: one-click (RFC 8058), the preference page, POST /v1/tokens.

In-process aiohttp client over the `database` fixture, so every test runs on SQLite
and PostgreSQL. GET and HEAD never change state; one-click is a POST.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from handlers.tokens import Keyring, sign, verify_return_path
from worker.ingress.http import build_app
from worker.store.models import Address, Contact, Event, Membership, Outbox, Preference
from tests.conftest import make_settings

SECRET = "0123456789abcdef0123456789abcdef"
KEYS_ENV = {"UNSUBD_TOKENS__KEYS": f'{{"k1": "{SECRET}"}}', "UNSUBD_TOKENS__BASE_URL": "https://u.example.org"}
KEYRING = Keyring({"k1": SECRET.encode()}, "k1")
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def no_metrics():
    return {}


async def add_contact(database, address: str, units=("alumni", "research-news", "events", "student-comms")) -> int:
    """A contact on `units`, as an import leaves it (membership rows, no consent rows)."""
    now = datetime.now(timezone.utc)
    async with database.transaction() as s:
        contact = Contact(name=None, origin="import", seq=0, created_at=now, updated_at=now)
        s.add(contact)
        await s.flush()
        s.add(Address(contact_id=contact.id, channel="email", address=address, created_at=now))
        s.add_all(Membership(contact_id=contact.id, unit=u, source="import", joined_at=now) for u in units)
        return contact.id


async def counts(database) -> tuple[int, int, int]:
    async with database.sessions() as s:
        return (await s.scalar(select(func.count()).select_from(Event)),
                await s.scalar(select(func.count()).select_from(Preference)),
                await s.scalar(select(func.count()).select_from(Outbox)))


async def preferences(database, contact_id: int) -> dict[tuple[str, str], tuple[str, str]]:
    async with database.sessions() as s:
        rows = (await s.scalars(select(Preference).where(Preference.contact_id == contact_id))).all()
    return {(p.unit, p.channel): (p.state, p.source) for p in rows}


async def updates(database) -> list[dict]:
    async with database.sessions() as s:
        return [r.payload for r in (await s.scalars(select(Outbox).order_by(Outbox.id))).all()]


def client_for(database, clock=None, **env):
    settings = make_settings(**{**KEYS_ENV, **env})
    kw = {"clock": clock} if clock else {}
    return TestClient(TestServer(build_app(settings, database.sessions, no_metrics, db=database, **kw)))


@pytest.fixture
async def client(database):
    async with client_for(database) as c:
        yield c


def proof_of(page: str) -> str:
    return html.unescape(re.search(r'name="proof" value="([^"]+)"', page).group(1))


def multipart(fields: dict[str, str]) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        part = writer.append(value)
        part.set_content_disposition("form-data", name=name)
    return writer


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_unsubscribes_the_tokens_scope_and_answers_200_directly(database, client, encoding):
    cid = await add_contact(database, "anna@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    body = ONE_CLICK if encoding == "urlencoded" else multipart(ONE_CLICK)
    r = await client.post(f"/u/{token}", data=body, allow_redirects=False)
    assert r.status == 200
    assert "Location" not in r.headers and "Set-Cookie" not in r.headers
    assert await preferences(database, cid) == {("alumni", "email"): ("unsubscribed", "one_click")}
    [update] = await updates(database)
    assert (update["source"], update["verified"], update["unit"], update["channel"], update["state"]) == (
        "one_click", True, "alumni", "email", "unsubscribed")
    assert update["contact_id"] == cid and update["address"] == "anna@example.se"


async def test_a_wildcard_token_stops_every_unit(database, client):
    cid = await add_contact(database, "bo@example.se")
    r = await client.post(f"/u/{sign(cid, '*', 'email', KEYRING)}", data=ONE_CLICK)
    assert r.status == 200
    assert await preferences(database, cid) == {("*", "email"): ("unsubscribed", "one_click")}


async def test_repeated_one_click_posts_publish_one_update(database, client):
    cid = await add_contact(database, "cecilia@example.se")
    token = sign(cid, "research-news", "email", KEYRING)
    for _ in range(3):
        assert (await client.post(f"/u/{token}", data=ONE_CLICK)).status == 200
    assert len(await updates(database)) == 1
    assert await preferences(database, cid) == {("research-news", "email"): ("unsubscribed", "one_click")}


async def test_get_and_head_never_change_state(database, client):
    cid = await add_contact(database, "david@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    before = await counts(database)
    for path in (f"/u/{token}", f"/u/{token}?lang=en", f"/u/{token}?saved=1",
                 f"/u/{token}?List-Unsubscribe=One-Click"):
        r = await client.get(path)
        assert r.status == 200 and "<form" in await r.text()
        assert (await client.head(path)).status == 200
    assert await counts(database) == before == (0, 0, 0)


async def test_a_body_that_is_neither_one_click_nor_a_form_save_changes_nothing(database, client):
    cid = await add_contact(database, "erik@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    for body in ({"List-Unsubscribe": "one-click please"}, {}, {"stop_all": "1"}):
        assert (await client.post(f"/u/{token}", data=body)).status == 400
    assert await counts(database) == (0, 0, 0)


async def test_a_page_save_without_a_valid_proof_is_refused(database):
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    clock = [now]
    async with client_for(database, clock=lambda: clock[0]) as c:
        cid = await add_contact(database, "frida@example.se")
        other = await add_contact(database, "gustav@example.se")
        token = sign(cid, "alumni", "email", KEYRING)
        proof = proof_of(await (await c.get(f"/u/{token}")).text())
        other_proof = proof_of(await (await c.get(f"/u/{sign(other, 'alumni', 'email', KEYRING)}")).text())
        save = {"lang": "en", "stop_all": "1"}
        # A changed character in the middle of the signature: its last characters may
        # carry padding bits a decoder ignores, so changing those may change nothing.
        middle = len(proof) - 8
        tampered = proof[:middle] + ("B" if proof[middle] == "A" else "A") + proof[middle + 1:]
        for bad in ("", "garbage", tampered, other_proof, f"{int(now.timestamp())}.{proof.split('.')[1]}0"):
            r = await c.post(f"/u/{token}", data={**save, "proof": bad}, allow_redirects=False)
            assert r.status == 403 and "too old" in await r.text()
        clock[0] = now + timedelta(days=3)                   # the form was left open too long
        r = await c.post(f"/u/{token}", data={**save, "proof": proof}, allow_redirects=False)
        assert r.status == 403
        assert await counts(database) == (0, 0, 0)
        clock[0] = now + timedelta(hours=1)                  # the same proof in time: accepted
        r = await c.post(f"/u/{token}", data={**save, "proof": proof}, allow_redirects=False)
        assert r.status == 303
        assert await preferences(database, cid) == {("*", "*"): ("unsubscribed", "page")}


async def test_bad_tokens_get_one_page_that_does_not_say_whether_a_contact_exists(database, client):
    cid = await add_contact(database, "hanna@example.se")
    good = sign(cid, "alumni", "email", KEYRING)
    tampered = good[:5] + ("A" if good[5] != "A" else "B") + good[6:]
    other_key = sign(cid, "alumni", "email", Keyring({"k9": b"z" * 32}, "k9"))
    no_contact = sign(cid + 1000, "alumni", "email", KEYRING)        # correctly signed, nobody there
    answers = set()
    for token in (tampered, other_key, no_contact, "not-a-token", "A" * 40):
        r = await client.get(f"/u/{token}?lang=en")
        answers.add((r.status, await r.text()))
        p = await client.post(f"/u/{token}?lang=en", data=ONE_CLICK)
        assert p.status == 404
    assert len(answers) == 1
    status, text = answers.pop()
    assert status == 404 and "does not work" in text and "hanna" not in text
    assert await counts(database) == (0, 0, 0)


async def test_the_page_preselects_the_senders_opt_out_and_saving_changes_the_database(database, client):
    cid = await add_contact(database, "ida@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    page = await (await client.get(f"/u/{token}?lang=en")).text()
    assert 'id="b-alumni-email" name="want" value="alumni:email">' in page       # not checked
    assert 'id="b-alumni-sms" name="want" value="alumni:sms" checked>' in page
    assert page.index("b-alumni-email") < page.index("b-research-news-email")     # the sender first
    assert "Alumni News (Email)" in page
    boxes = re.findall(r'name="box" value="([^"]+)"', page)
    want = [b for b in boxes if b not in ("alumni:email", "events:sms")]
    r = await client.post(f"/u/{token}", data=[("proof", proof_of(page)), ("lang", "en"),
                                               *[("box", b) for b in boxes], *[("want", w) for w in want]],
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == f"/u/{token}?lang=en&saved=1"
    assert await preferences(database, cid) == {("alumni", "email"): ("unsubscribed", "page"),
                                                ("events", "sms"): ("unsubscribed", "page")}
    saved = await (await client.get(r.headers["Location"])).text()
    assert "Your choices are saved." in saved
    assert 'value="alumni:email">' in saved and 'value="events:sms">' in saved and \
        'value="alumni:sms" checked>' in saved

    # Opting back in, from the same link: allowed, because the signed token is the proof.
    r = await client.post(f"/u/{token}", data=[("proof", proof_of(saved)), ("lang", "en"),
                                               *[("box", b) for b in boxes],
                                               *[("want", w) for w in [*want, "alumni:email"]]],
                          allow_redirects=False)
    assert r.status == 303
    assert await preferences(database, cid) == {("alumni", "email"): ("subscribed", "page"),
                                                ("events", "sms"): ("unsubscribed", "page")}
    states = [(u["unit"], u["channel"], u["state"], u["source"]) for u in await updates(database)]
    assert states == [("alumni", "email", "unsubscribed", "page"), ("events", "sms", "unsubscribed", "page"),
                      ("alumni", "email", "subscribed", "page")]


async def test_stop_all_contact_in_one_step(database, client):
    cid = await add_contact(database, "jon@example.se")
    token = sign(cid, "events", "sms", KEYRING)
    page = await (await client.get(f"/u/{token}")).text()
    r = await client.post(f"/u/{token}", data={"proof": proof_of(page), "lang": "sv", "stop_all": "1"},
                          allow_redirects=False)
    assert r.status == 303
    assert await preferences(database, cid) == {("*", "*"): ("unsubscribed", "page")}
    after = await (await client.get(f"/u/{token}?saved=1")).text()
    assert 'name="stop_all" value="1" aria-describedby="stop_all_help" checked>' in after
    assert 'id="stop_all_on"' in after             # says plainly that nothing is sent while it is on
    # The boxes keep the choices beneath the stop (all of them, here), for when it is undone.
    assert after.count(' checked>') == 1 + after.count('name="want"')


@pytest.mark.parametrize("accept,query,lang,phrase", [
    ("sv-SE,sv;q=0.9,en;q=0.5", "", "sv", "Stoppa all kontakt"),
    ("nb-NO,nb;q=0.9", "", "nb", "Stopp all kontakt"),
    ("no", "", "nb", "Lagre"),
    ("en-GB,en;q=0.9,sv;q=0.2", "", "en", "Stop all contact"),
    ("fr-FR", "", "sv", "Spara"),
    ("sv", "?lang=en", "en", "Save"),
])
async def test_the_page_speaks_the_visitors_language_and_is_accessible(database, client, accept, query, lang, phrase):
    cid = await add_contact(database, "kim@example.se")
    r = await client.get(f"/u/{sign(cid, 'alumni', 'email', KEYRING)}{query}", headers={"Accept-Language": accept})
    page = await r.text()
    assert f'<html lang="{lang}">' in page and phrase in page
    assert "Nordvik universitet / Nordvik University" in page and "dataskydd@example.org" in page
    ids = re.findall(r'<input type="checkbox" id="([^"]+)"', page)
    assert len(ids) == 1 + 4 * 5                      # stop-all, and 4 units x 5 channels
    for i in ids:
        assert f'<label for="{i}">' in page
    assert ":focus-visible" in page and 'name="viewport"' in page and "<script" not in page
    assert r.headers["Referrer-Policy"] == "same-origin" and r.headers["Cache-Control"] == "no-store"
    assert "script-src" not in r.headers["Content-Security-Policy"]


async def test_v1_tokens_returns_the_header_set_and_the_link_works(database, client):
    cid = await add_contact(database, "lisa@example.se")
    r = await client.post("/v1/tokens", json={"address": "Lisa@Example.se", "unit": "alumni"})
    assert r.status == 200
    body = await r.json()
    token = body["token"]
    assert body["contact_id"] == cid and body["channel"] == "email"
    assert body["headers"] == {
        "List-Unsubscribe": f"<https://u.example.org/u/{token}>, "
                            f"<mailto:unsubscribe+{token}@mail.example.org?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["preferences_url"] == f"https://u.example.org/u/{token}"
    assert "List-Unsubscribe-Post" in body["dkim_sign"]
    local, _, domain = body["return_path"].partition("@")
    assert local.startswith("bounces+") and domain == "mail.example.org" and len(local) <= 64
    claims = verify_return_path(local.partition("+")[2], KEYRING, ["alumni"])
    assert claims is not None and claims.contact_id == cid and claims.unit == "alumni"
    assert claims.names("lisa@example.se") and not claims.names("other@example.se")
    assert body["reply_to"] == f"alumni+{token}@mail.example.org"      # the unit's reply address, tagged
    assert (await client.post(f"/u/{token}", data=ONE_CLICK)).status == 200
    assert await preferences(database, cid) == {("alumni", "email"): ("unsubscribed", "one_click")}


@pytest.mark.parametrize("body,status", [
    ({"address": "nobody@example.se", "unit": "alumni"}, 404),
    ({"address": "lisa@example.se", "unit": "no-such-unit"}, 400),
    ({"address": "lisa@example.se", "unit": "alumni", "channel": "fax"}, 400),
    ({"address": "not an address", "unit": "alumni"}, 400),
    ({"unit": "alumni"}, 400),
    (["lisa@example.se"], 400),
])
async def test_v1_tokens_refuses_what_it_cannot_issue(database, client, body, status):
    await add_contact(database, "lisa@example.se")
    r = await client.post("/v1/tokens", json=body)
    assert r.status == status and "error" in await r.json()


async def test_v1_tokens_needs_the_api_key_when_keys_are_set(database):
    await add_contact(database, "mia@example.se")
    async with client_for(database, UNSUBD_API_KEYS='["s3cret-key-0123456"]') as c:
        body = {"address": "mia@example.se", "unit": "alumni"}
        assert (await c.post("/v1/tokens", json=body)).status == 401
        r = await c.post("/v1/tokens", json=body, headers={"Authorization": "Bearer s3cret-key-0123456"})
        assert r.status == 200 and (await r.json())["token"]
