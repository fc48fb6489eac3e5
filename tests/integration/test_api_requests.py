"""Rights requests and retention through the JSON API (issue 23 items 5 and 6), on SQLite and
PostgreSQL: GET /v1/rights, POST /v1/rights/{id}/fulfil, POST /v1/retention/run, with their
scopes, the key recorded as the operator, and bad input refused without a change."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from worker.ingress.http import build_app
from worker.ops.requests import list_open
from worker.ops.rights import export
from worker.store.models import Contact, Event, ReviewItem
from tests.conftest import make_settings
from tests.integration.test_api_rights import API_KEYS, CRM, DPO, READER, auth, no_metrics
from tests.integration.test_links_http import KEYRING, KEYS_ENV
from tests.integration.test_rights import receive, settings_for
from tests.integration.test_rights_requests import ANNA, JAN31, imported, reply

from aiohttp.test_utils import TestClient, TestServer

NOW = JAN31 + timedelta(days=40)           # the requests of 31 January are overdue by then


def client(database, **env) -> TestClient:
    url = str(database.engine.url.render_as_string(hide_password=False))
    settings = make_settings(url, **{**KEYS_ENV, "UNSUBD_API_KEYS": API_KEYS, **env})
    return TestClient(TestServer(build_app(settings, database.sessions, no_metrics, db=database,
                                           keyring=KEYRING, clock=lambda: NOW)))


async def _events(database) -> int:
    async with database.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Event)))


async def test_rights_are_listed_overdue_and_fulfilled_through_the_api(database):
    await imported(database, ANNA, "bo@example.se")
    await receive(database, reply("Jag vill ha ett registerutdrag, tack."), JAN31)
    await receive(database, reply("Radera mina uppgifter, tack.", sender="bo@example.se"), JAN31)
    async with client(database) as c:
        r = await c.get("/v1/rights?overdue=true", headers=auth(READER))
        items = (await r.json())["items"]
        assert r.status == 200 and {i["type"] for i in items} == {"access", "erasure"}
        assert all(i["overdue"] and i["days_left"] < 0 and i["due"] == "2026-02-28" for i in items)
        access = next(i for i in items if i["type"] == "access")
        erasure = next(i for i in items if i["type"] == "erasure")
        r = await c.post(f"/v1/rights/{access['id']}/fulfil", json={"note": "sent"}, headers=auth(CRM))
        assert r.status == 403 and (await r.json())["scope"] == "admin"
        r = await c.post(f"/v1/rights/{access['id']}/fulfil", json={"note": "sent"}, headers=auth(DPO))
        body = await r.json()
        assert r.status == 200 and body["resolution"] == "fulfilled" and body["operator"] == "api:dpo"
        assert body["export"]["address"] == ANNA and "What we hold about" in body["summary"]
        r = await c.post(f"/v1/rights/{access['id']}/fulfil", headers=auth(DPO))
        assert r.status == 409 and "already fulfilled" in (await r.json())["error"]
        r = await c.post(f"/v1/rights/{erasure['id']}/fulfil", headers=auth(DPO))
        assert r.status == 200 and (await r.json())["resolution"] == "erased"
    assert (await export(database, settings_for(database), "bo@example.se"))["contact"] is None
    assert await list_open(database, NOW) == []
    async with database.sessions() as s:
        closed = (await s.scalars(select(ReviewItem).where(ReviewItem.id == access["id"]))).one()
        event = await s.get(Event, closed.resolution_event_id)
    assert event is not None and event.evidence["operator"] == "api:dpo"


async def test_bad_fulfil_requests_change_nothing(database):
    await imported(database, ANNA)
    await receive(database, reply("Jag vill ha ett registerutdrag, tack."), JAN31)
    before = await _events(database)
    async with client(database) as c:
        assert (await c.post("/v1/rights/abc/fulfil", headers=auth(DPO))).status == 400
        assert (await c.post("/v1/rights/999999/fulfil", headers=auth(DPO))).status == 404
        (item,) = await list_open(database, NOW)
        r = await c.post(f"/v1/rights/{item.id}/fulfil", data=b"[1, 2", headers=auth(DPO))
        assert r.status == 400
        r = await c.post(f"/v1/rights/{item.id}/fulfil", json={"note": 7}, headers=auth(DPO))
        assert r.status == 400
        assert (await c.get("/v1/rights?overdue=maybe", headers=auth(READER))).status == 400
    assert await _events(database) == before
    assert len(await list_open(database, NOW)) == 1


async def test_retention_runs_through_the_api_dry_run_first(database):
    await imported(database, ANNA)
    env = {"UNSUBD_RETENTION__CONTACTS__NON_ALUMNI": "30d", "UNSUBD_RETENTION__ALUMNI_UNITS": "[]"}
    async with client(database, **env) as c:
        r = await c.post("/v1/retention/run", json={"dry_run": True}, headers=auth(CRM))
        assert r.status == 403 and (await r.json())["scope"] == "admin"
        before = await _events(database)
        r = await c.post("/v1/retention/run", json={"dry_run": True}, headers=auth(DPO))
        dry = await r.json()
        assert r.status == 200 and dry["dry_run"] and dry["due"]["contacts"] == 1
        assert await _events(database) == before
        assert (await c.post("/v1/retention/run", json={"dry_run": "yes"}, headers=auth(DPO))).status == 400
        r = await c.post("/v1/retention/run", headers=auth(DPO))
        done = await r.json()
        assert r.status == 200 and not done["dry_run"] and done["done"]["contacts"] == 1
    async with database.sessions() as s:
        names = (await s.scalars(select(Contact.name))).all()
    assert names == [None]                  # the contact was erased; only its tombstone blocks the address
    assert (await export(database, settings_for(database), ANNA))["erased"] is not None
