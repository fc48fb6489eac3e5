"""The rights routes of the JSON API (issue 23 items 1, 2, 4) and API keys with names and scopes
(issue 24 item 5), through build_app with a real database: SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from worker.ingress.http import build_app
from worker.ops.contacts import import_rows, parse_csv, show
from worker.store.models import Event, Outbox
from tests.conftest import make_settings
from tests.integration.test_links_http import KEYRING, KEYS_ENV
from tests.integration.test_rights import (ADDRESS, OTHER, SCHEMA, T0, a_person_with_history, dump, found_in)

NEW = "anna.svensson@nytt.example.se"
READER, CRM, DPO = "reader-key-0123456789", "crm-key-0123456789ab", "dpo-key-0123456789ab"
API_KEYS = json.dumps([{"name": "reader", "key": READER, "scopes": ["read"]},
                       {"name": "crm", "key": CRM, "scopes": ["read", "write"]},
                       {"name": "dpo", "key": DPO, "scopes": ["read", "write", "admin"]}])
NOW = T0 + timedelta(days=1)


async def no_metrics():
    return {}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def client(database, **env) -> TestClient:
    url = str(database.engine.url.render_as_string(hide_password=False))
    settings = make_settings(url, **{**KEYS_ENV, **env})
    return TestClient(TestServer(build_app(settings, database.sessions, no_metrics, db=database,
                                           keyring=KEYRING, clock=lambda: NOW)))


async def test_each_route_needs_its_scope_and_names_it_when_missing(database):
    await a_person_with_history(database)
    async with client(database, UNSUBD_API_KEYS=API_KEYS) as c:
        r = await c.get("/v1/suppressions")
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await c.get("/v1/suppressions", headers=auth("reader-key-012345678X"))).status == 401
        assert (await c.get("/v1/suppressions", headers=auth(READER))).status == 200
        assert (await c.get(f"/v1/contacts/{ADDRESS}/export", headers=auth(READER))).status == 200
        token_body = {"address": ADDRESS, "unit": "alumni"}
        r = await c.post("/v1/tokens", json=token_body, headers=auth(READER))
        problem = await r.json()
        assert r.status == 403 and problem["scope"] == "write" and "'write'" in problem["error"]
        assert "reader" in problem["error"] and READER not in problem["error"]
        assert (await c.post("/v1/tokens", json=token_body, headers=auth(CRM))).status == 200
        for path, body in [(f"/v1/contacts/{ADDRESS}/erase", {"reason": "x"}),
                           (f"/v1/contacts/{ADDRESS}/change-address", {"new_address": NEW, "reason": "x"})]:
            r = await c.post(path, json=body, headers=auth(CRM))
            assert r.status == 403 and (await r.json())["scope"] == "admin"
        assert (await c.get("/v1/no-such-thing", headers=auth(READER))).status == 404
        assert (await c.get("/healthz")).status == 200
    assert (await show(database.sessions, make_settings(), ADDRESS)).contact_id is not None   # nothing erased


async def test_export_as_json_and_as_a_summary(database):
    await a_person_with_history(database)
    async with client(database, UNSUBD_API_KEYS=API_KEYS) as c:
        r = await c.get(f"/v1/contacts/{ADDRESS.upper()}/export", headers=auth(READER))
        data = await r.json()
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        assert data["contact"]["name"] == "Anna Svensson" and len(data["inbound_item"]) == 4
        assert OTHER not in json.dumps(data)
        r = await c.get(f"/v1/contacts/{ADDRESS}/export", params={"format": "summary"}, headers=auth(READER))
        assert r.status == 200 and r.content_type == "text/plain"
        assert (await r.text()).startswith(f"What we hold about {ADDRESS}:")
        r = await c.get(f"/v1/contacts/{ADDRESS}/export", params={"format": "xml"}, headers=auth(READER))
        assert r.status == 400 and "format" in (await r.json())["error"]
        assert (await c.get("/v1/contacts/nobody@example.se/export", headers=auth(READER))).status == 404
        assert (await c.get("/v1/contacts/not-an-address/export", headers=auth(READER))).status == 400


async def test_erase_through_the_api_records_the_key_and_refuses_bad_input(database):
    contact_id = await a_person_with_history(database)
    path = f"/v1/contacts/{ADDRESS}/erase"
    async with client(database, UNSUBD_API_KEYS=API_KEYS) as c:
        before = await dump(database)
        for body, status in [(b"not json", 400), (b"[1]", 400), (b"{}", 422), (b'{"reason": "  "}', 422),
                             (b'{"reason": 7}', 422), (b'{"reason": "\\u0000"}', 422)]:
            r = await c.post(path, data=body, headers={**auth(DPO), "Content-Type": "application/json"})
            assert r.status == status and (await r.json())["status"] == status, body
        assert (await c.post("/v1/contacts/not-an-address/erase", json={"reason": "x"},
                             headers=auth(DPO))).status == 400
        r = await c.post("/v1/contacts/nobody@example.se/erase", json={"reason": "x"}, headers=auth(DPO))
        assert r.status == 404 and "nothing" in (await r.json())["error"]
        assert await dump(database) == before                      # bad input changed nothing

        r = await c.post(path, json={"reason": "GDPR request 12"}, headers=auth(DPO))
        done = await r.json()
        assert r.status == 200 and done["changed"] and done["addresses"] == 1 and done["operator"] == "api:dpo"
        assert done["counts"]["erased"] == 1
        again = await c.post(path, json={"reason": "again"}, headers=auth(DPO))
        assert again.status == 200 and (await again.json())["changed"] is False
    assert found_in(await dump(database), ADDRESS) == []
    async with database.sessions() as s:
        event = await s.get(Event, done["event_id"])
        erased = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.erased"))).one()
    assert event.evidence["operator"] == "api:dpo"                 # the audit trail names the key
    assert erased.payload["operator"] == "api:dpo" and erased.contact_id == contact_id
    jsonschema.validate(erased.payload, SCHEMA)


async def test_change_address_through_the_api(database):
    contact_id = await a_person_with_history(database)
    settings = make_settings(str(database.engine.url.render_as_string(hide_password=False)), **KEYS_ENV)
    await import_rows(database, parse_csv("address,units\ncarl@example.se,alumni\n", settings), T0, "c.csv",
                      operator="ops")
    path = f"/v1/contacts/{ADDRESS}/change-address"
    async with client(database, UNSUBD_API_KEYS=API_KEYS) as c:
        # an erased address to collide with
        assert (await c.post("/v1/contacts/erased.person@example.se/erase", json={"reason": "x"},
                             headers=auth(DPO))).status == 404      # nothing held yet: nothing to erase
        await import_rows(database, parse_csv("address,units\nerased.person@example.se,alumni\n", settings), T0,
                          "d.csv", operator="ops")
        assert (await c.post("/v1/contacts/erased.person@example.se/erase", json={"reason": "x"},
                             headers=auth(DPO))).status == 200
        before = await dump(database)
        cases = [
            (path, b"nope", 400, None), (path, b'{"reason": "x"}', 400, None),
            (path, json.dumps({"new_address": "not an address", "reason": "x"}).encode(), 400, None),
            (path, json.dumps({"new_address": NEW}).encode(), 422, None),
            (path, json.dumps({"new_address": ADDRESS.upper(), "reason": "x"}).encode(), 400, None),
            ("/v1/contacts/not-an-address/change-address", json.dumps({"new_address": NEW, "reason": "x"}).encode(),
             400, None),
            ("/v1/contacts/nobody@example.se/change-address",
             json.dumps({"new_address": NEW, "reason": "x"}).encode(), 404, None),
            (path, json.dumps({"new_address": "carl@example.se", "reason": "x"}).encode(), 409, "taken"),
            (path, json.dumps({"new_address": "Erased.Person@example.se", "reason": "x"}).encode(), 409, "erased"),
        ]
        for where, body, status, conflict in cases:
            r = await c.post(where, data=body, headers={**auth(DPO), "Content-Type": "application/json"})
            problem = await r.json()
            assert r.status == status and problem["status"] == status, (where, body, problem)
            assert problem.get("conflict") == conflict
        assert await dump(database) == before                       # nothing written by any of them

        r = await c.post(path, json={"new_address": NEW, "reason": "new address,\u0000 ticket 9"}, headers=auth(DPO))
        done = await r.json()
        assert r.status == 200 and done["changed"] and (done["old_address"], done["new_address"]) == (ADDRESS, NEW)
        assert done["operator"] == "api:dpo" and done["updates"] == 1
        view = await (await c.get(f"/v1/contacts/{NEW}", headers=auth(READER))).json()
        assert view["contact_id"] == contact_id and view["suppressions"] == []
    async with database.sessions() as s:
        event = await s.get(Event, done["event_id"])
        moved = (await s.scalars(select(Outbox).where(Outbox.routing_key == "contact.address_changed"))).one()
    assert event.evidence["operator"] == "api:dpo" and moved.payload["operator"] == "api:dpo"
    assert event.evidence["operator_reason"] == "new address, ticket 9"      # a NUL is not kept (PostgreSQL)
    jsonschema.validate(moved.payload, SCHEMA)


async def test_without_keys_the_api_acts_as_loopback_with_every_scope(database):
    await a_person_with_history(database)
    async with client(database) as c:
        r = await c.post(f"/v1/contacts/{ADDRESS}/change-address", json={"new_address": NEW, "reason": "typo"})
        done = await r.json()
        assert r.status == 200 and done["operator"] == "api:loopback"
    async with database.sessions() as s:
        assert (await s.get(Event, done["event_id"])).evidence["operator"] == "api:loopback"


@pytest.mark.parametrize("key, status", [(READER, 200), (CRM, 200), (DPO, 200), ("m-key-0123456789abcd", 200),
                                         ("wrong-key-0123456789", 403)])
async def test_metrics_open_to_any_api_key_and_to_metrics_keys(database, key, status):
    env = {"UNSUBD_API_KEYS": API_KEYS, "UNSUBD_METRICS_KEYS": '["m-key-0123456789abcd"]',
           "UNSUBD_METRICS_NETWORKS": '["10.0.0.0/8"]'}                 # the test client is not in it
    async with client(database, **env) as c:
        assert (await c.get("/metrics", headers=auth(key))).status == status
