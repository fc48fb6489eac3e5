"""The smaller guards of issue 22 (item 5) on the HTTP listener, each failing on the code before it:

* a preference-page save posted from another site (its `Origin`, or lacking it its
  `Referer`, is not ours) is refused with 403 and a page that says so; RFC 8058
  one-click, which mail clients' servers send without `Origin`, still works;
* a form proof is single-use: a second save with it changes nothing;
* the `Bearer` scheme is matched without regard to case (RFC 9110 section 11.1),
  and a key without the scheme is not a bearer credential;
* `/metrics` answers only clients in `metrics_networks` (loopback by default) that
  did not come through a proxy, or a request with a metrics or API key.

In-process aiohttp client over the `database` fixture (SQLite and PostgreSQL).
"""

from __future__ import annotations

import re

import pytest

from handlers.tokens import sign
from tests.conftest import make_settings
from tests.integration.test_links_http import (
    KEYRING, ONE_CLICK, add_contact, client_for, counts, no_metrics, preferences, proof_of,
)
from worker.ingress.http import build_app, origin_of

OURS = "https://u.example.org"          # tokens.base_url in KEYS_ENV


async def _page(client, token: str) -> str:
    return await (await client.get(f"/u/{token}?lang=en")).text()


def _stop_all(proof: str) -> dict[str, str]:
    return {"proof": proof, "lang": "en", "stop_all": "1"}


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},                                         # a sandboxed frame, a data: URL
    {"Origin": "https://u.example.org.evil.example"},
    {"Origin": "http://u.example.org"},                         # ours is https
    {"Referer": "https://evil.example/page?x=1"},               # no Origin: the Referer says it
    {"Origin": "https://evil.example", "Referer": f"{OURS}/u/x"},   # Origin wins over a Referer
], ids=["foreign", "null", "lookalike", "other-scheme", "referer", "origin-first"])
async def test_a_page_save_posted_from_another_site_is_refused(database, headers):
    cid = await add_contact(database, "anna@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    async with client_for(database) as c:
        proof = proof_of(await _page(c, token))
        r = await c.post(f"/u/{token}", data=_stop_all(proof), headers=headers, allow_redirects=False)
        assert r.status == 403
        body = await r.text()
        assert "another website" in body and "Nothing was changed" in body and f"/u/{token}?lang=en" in body
        assert await counts(database) == (0, 0, 0)
        # The same proof from our own page still works: the refusal did not use it up.
        r = await c.post(f"/u/{token}", data=_stop_all(proof), headers={"Origin": OURS}, allow_redirects=False)
        assert r.status == 303
    assert await preferences(database, cid) == {("*", "*"): ("unsubscribed", "page")}


@pytest.mark.parametrize("headers", [
    {"Origin": OURS},
    {"Origin": "HTTPS://U.Example.ORG:443"},                    # the same origin, spelled otherwise
    {"Referer": f"{OURS}/u/abc?lang=en"},
    {},                                                         # neither: not evidence of anything
    "own-host",                                                 # the origin the request was sent to
], ids=["base-url", "base-url-spelled", "referer", "none", "own-host"])
async def test_a_page_save_from_our_own_page_is_accepted(database, headers):
    cid = await add_contact(database, "bo@example.se")
    token = sign(cid, "alumni", "email", KEYRING)
    async with client_for(database) as c:
        if headers == "own-host":
            headers = {"Origin": str(c.make_url("/")).rstrip("/")}
        proof = proof_of(await _page(c, token))
        r = await c.post(f"/u/{token}", data=_stop_all(proof), headers=headers, allow_redirects=False)
        assert r.status == 303
    assert await preferences(database, cid) == {("*", "*"): ("unsubscribed", "page")}


async def test_one_click_needs_no_origin_and_is_not_refused_for_one(database):
    """RFC 8058: the mail client's server POSTs without Origin; a webmail in a browser may
    POST with its own. A one-click can only opt out of what the signed token names."""
    a, b = await add_contact(database, "cia@example.se"), await add_contact(database, "dan@example.se")
    async with client_for(database) as c:
        r = await c.post(f"/u/{sign(a, 'alumni', 'email', KEYRING)}", data=ONE_CLICK)
        assert r.status == 200
        r = await c.post(f"/u/{sign(b, 'alumni', 'email', KEYRING)}", data=ONE_CLICK,
                         headers={"Origin": "https://mail.webmail.example"})
        assert r.status == 200
    assert await preferences(database, a) == {("alumni", "email"): ("unsubscribed", "one_click")}
    assert await preferences(database, b) == {("alumni", "email"): ("unsubscribed", "one_click")}


async def test_a_form_proof_is_single_use(database):
    cid = await add_contact(database, "eva@example.se", units=("alumni",))
    token = sign(cid, "alumni", "email", KEYRING)
    async with client_for(database) as c:
        page = await _page(c, token)
        again = await _page(c, token)
        assert proof_of(page) != proof_of(again)            # every rendering has a proof of its own
        boxes = re.findall(r'name="box" value="([^"]+)"', page)
        proof = proof_of(page)
        r = await c.post(f"/u/{token}", data=_stop_all(proof), allow_redirects=False)
        assert r.status == 303
        after_first = await counts(database)
        # A replay of the captured form, now asking to opt back in to everything: refused.
        replay = [("proof", proof), ("lang", "en"), ("stop_all_shown", "1"),
                  *[("box", b) for b in boxes], *[("want", b) for b in boxes]]
        r = await c.post(f"/u/{token}", data=replay, allow_redirects=False)
        assert r.status == 409
        text = await r.text()
        assert "already saved" in text and "nothing was changed" in text
        # And the very same save again (a second click): also nothing.
        r = await c.post(f"/u/{token}", data=_stop_all(proof), allow_redirects=False)
        assert r.status == 409
        assert await counts(database) == after_first
        assert await preferences(database, cid) == {("*", "*"): ("unsubscribed", "page")}
        # A fresh page has a fresh proof, and opting back in from it works.
        fresh = proof_of(await _page(c, token))
        r = await c.post(f"/u/{token}", data=[("proof", fresh), *replay[1:]], allow_redirects=False)
        assert r.status == 303
    assert (await preferences(database, cid))[("*", "*")] == ("subscribed", "page")


@pytest.mark.parametrize("value,status", [
    ("Bearer s3cret-key-0123456", 200), ("bearer s3cret-key-0123456", 200), ("BEARER s3cret-key-0123456", 200), ("bEaReR   s3cret-key-0123456  ", 200),
    ("Bearer wrong", 401), ("s3cret-key-0123456", 401), ("Basic s3cret-key-0123456", 401), ("Bearer", 401), ("Bearers3cret-key-0123456", 401),
])
async def test_the_bearer_scheme_matches_in_any_case(database, value, status):
    settings = make_settings(UNSUBD_API_KEYS='["s3cret-key-0123456"]')
    from aiohttp.test_utils import TestClient, TestServer
    async with TestClient(TestServer(build_app(settings, database.sessions, no_metrics))) as c:
        assert (await c.get("/v1/updates", headers={"Authorization": value})).status == status


async def _metrics_status(database, headers=None, **env) -> int:
    from aiohttp.test_utils import TestClient, TestServer

    async def some_metrics():
        return {"x": 1}
    settings = make_settings(**env)
    async with TestClient(TestServer(build_app(settings, database.sessions, some_metrics))) as c:
        r = await c.get("/metrics", headers=headers or {})
        if r.status == 200:
            assert "unsubd_x 1" in await r.text()
        return r.status


async def test_metrics_are_served_to_loopback_by_default(database):
    assert make_settings().metrics_networks == ("127.0.0.0/8", "::1/128")
    assert await _metrics_status(database) == 200                  # the test client is on 127.0.0.1


async def test_metrics_through_a_proxy_or_from_elsewhere_need_a_key(database):
    elsewhere = {"UNSUBD_METRICS_NETWORKS": '["10.0.0.0/8"]'}      # 127.0.0.1 is not in it
    assert await _metrics_status(database, **elsewhere) == 403
    assert await _metrics_status(database, {"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await _metrics_status(database, {"Forwarded": "for=203.0.113.9"}) == 403
    keyed = {**elsewhere, "UNSUBD_METRICS_KEYS": '["m-key"]', "UNSUBD_API_KEYS": '["api-key-0123456789"]'}
    assert await _metrics_status(database, {"Authorization": "Bearer m-key"}, **keyed) == 200
    assert await _metrics_status(database, {"Authorization": "bearer api-key-0123456789"}, **keyed) == 200
    assert await _metrics_status(database, {"Authorization": "Bearer nope"}, **keyed) == 403
    assert await _metrics_status(database, {"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer m-key"},
                                 **keyed) == 200


def test_metrics_networks_must_be_networks():
    with pytest.raises(Exception, match="not a network"):
        make_settings(UNSUBD_METRICS_NETWORKS='["localhost"]')


@pytest.mark.parametrize("url,origin", [
    ("https://u.example.org/u/x?y=1", "https://u.example.org"),
    ("HTTPS://U.EXAMPLE.ORG:443", "https://u.example.org"),
    ("http://127.0.0.1:8025/", "http://127.0.0.1:8025"),
    ("http://[::1]:80/", "http://[::1]"),
    ("null", None), ("", None), ("javascript:alert(1)", None), ("https://", None), ("http://h:99999/", None),
])
def test_origin_of(url, origin):
    assert origin_of(url) == origin
