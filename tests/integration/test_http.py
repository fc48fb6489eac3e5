"""HTTP: the changes feed, API keys, health; GET never changes state."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime, timezone

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from handlers.state.apply import apply
from handlers.model import ALL, Action, ActionType, Decision, Kind
from worker.app import Worker
from worker.ingress.http import build_app
from worker.store.models import Event, Outbox
from worker.outbox.relay import FeedPublisher, Relay
from tests.conftest import REPO, make_settings

SCHEMA = json.loads((REPO / "docs" / "update.schema.json").read_text())

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


async def no_metrics():
    return {"x": 1}


async def seed(database, n: int) -> None:
    for i in range(n):
        act = Action(ActionType.UNSUBSCRIBE, f"p{i}@example.se", units=("alumni",), channels=("email",))
        await apply(Decision(item_id=f"i{i}", kind=Kind.OPTOUT, actions=(act,), reason="t"),
                    database.unit_of_work(), T0)


@pytest.fixture
async def client(database):
    settings = make_settings()
    async with TestClient(TestServer(build_app(settings, database.sessions, no_metrics))) as c:
        yield c


async def test_the_feed_serves_published_updates_in_order_with_a_cursor(database, client):
    await seed(database, 5)
    r = await client.get("/v1/updates")
    assert (await r.json()) == {"updates": [], "next": 0}          # nothing published yet
    await Relay(make_settings(), database, FeedPublisher(), lambda: T0).drain()
    page = await (await client.get("/v1/updates", params={"limit": "3"})).json()
    assert [u["address"] for u in page["updates"]] == ["p0@example.se", "p1@example.se", "p2@example.se"]
    rest = await (await client.get("/v1/updates", params={"after": str(page["next"])})).json()
    assert [u["address"] for u in rest["updates"]] == ["p3@example.se", "p4@example.se"]
    u = rest["updates"][0]
    for item in page["updates"] + rest["updates"]:
        jsonschema.validate(item, SCHEMA)            # the same contract as the RabbitMQ messages
    assert u["routing_key"] == "preference.alumni.email" and u["state"] == "unsubscribed"
    assert {"schema_version", "event_id", "contact_id", "unit", "channel", "sequence", "occurred_at"} <= set(u)
    empty = await (await client.get("/v1/updates", params={"after": str(rest["next"])})).json()
    assert empty == {"updates": [], "next": rest["next"]}


@pytest.mark.parametrize("query", ["after=x", "after=-1", "limit=0", "limit=100000", "wait=x", "wait=-1",
                                   "wait=31", "wait=nan"])
async def test_bad_feed_parameters_get_400(client, query):
    r = await client.get(f"/v1/updates?{query}")
    assert r.status == 400 and "error" in await r.json()


async def test_a_waiting_feed_call_is_woken_by_the_relay_of_its_process(database, monkeypatch):
    from worker.ingress import http

    monkeypatch.setattr(http, "FEED_RECHECK", 60.0)     # only the relay's signal can wake it in time
    relay = Relay(make_settings(), database, FeedPublisher(), lambda: T0)
    app = build_app(make_settings(), database.sessions, no_metrics, feed_changed=relay.feed_changed)
    async with TestClient(TestServer(app)) as c:
        waiting = asyncio.create_task(c.get("/v1/updates", params={"after": "0", "wait": "5"}))
        await asyncio.sleep(0.3)
        assert not waiting.done()                        # nothing published: it holds the answer
        await seed(database, 2)
        assert await relay.drain() == 2
        page = await (await asyncio.wait_for(waiting, 4)).json()
    assert [u["address"] for u in page["updates"]] == ["p0@example.se", "p1@example.se"]


async def test_a_waiting_feed_call_sees_updates_another_process_published(database, client):
    waiting = asyncio.create_task(client.get("/v1/updates", params={"after": "0", "wait": "10"}))
    await asyncio.sleep(0.3)
    await seed(database, 1)
    await Relay(make_settings(), database, FeedPublisher(), lambda: T0).drain()   # not this app's relay
    page = await (await asyncio.wait_for(waiting, 8)).json()
    assert [u["address"] for u in page["updates"]] == ["p0@example.se"]
    # With nothing new, the call ends empty when its wait is over.
    empty = await (await client.get("/v1/updates", params={"after": str(page["next"]), "wait": "0.2"})).json()
    assert empty == {"updates": [], "next": page["next"]}


async def test_a_waiting_feed_call_ends_when_the_worker_stops(sqlite_url):
    w = Worker(make_settings(sqlite_url))
    await w.start()
    host, port = w.http_address

    def fetch() -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/updates?after=0&wait=30", timeout=60) as resp:
            return resp.status, resp.read()

    waiting = asyncio.create_task(asyncio.to_thread(fetch))
    await asyncio.sleep(0.5)
    await asyncio.wait_for(w.stop(), 20)
    status, body = await asyncio.wait_for(waiting, 20)
    assert status == 200 and json.loads(body) == {"updates": [], "next": 0}


async def test_get_and_head_never_change_state(database, client):
    await seed(database, 2)

    async def snapshot():
        async with database.sessions() as s:
            return (await s.scalar(select(func.count()).select_from(Event)),
                    await s.scalar(select(func.count()).select_from(Outbox).where(Outbox.published_at.is_(None))))

    before = await snapshot()
    for path in ("/v1/updates", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200
        assert (await client.head(path)).status in (200, 405)
    assert await snapshot() == before


async def test_api_keys_guard_v1_but_not_health(database):
    settings = make_settings(UNSUBD_API_KEYS='["s3cret-key-0123456"]')
    async with TestClient(TestServer(build_app(settings, database.sessions, no_metrics))) as c:
        assert (await c.get("/v1/updates")).status == 401
        assert (await c.get("/v1/updates", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.get("/v1/updates", headers={"Authorization": "Bearer s3cret-key-0123456"})).status == 200
        assert (await c.get("/healthz")).status == 200


async def test_health_and_metrics(client):
    assert await (await client.get("/readyz")).json() == {"status": "ready"}
    assert "unsubd_x 1" in await (await client.get("/metrics")).text()


async def test_the_feed_over_a_real_socket_from_a_running_worker(sqlite_url):
    w = Worker(make_settings(sqlite_url))
    await w.start()
    try:
        host, port = w.http_address

        def fetch(path: str):
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as resp:
                return resp.status, resp.read()

        status, body = await asyncio.to_thread(fetch, "/v1/updates?after=0")
        assert status == 200 and json.loads(body) == {"updates": [], "next": 0}
        status, body = await asyncio.to_thread(fetch, "/metrics")
        assert status == 200 and b"unsubd_outbox_backlog 0" in body
    finally:
        await w.stop()


async def test_contact_suppression_and_review_lookups(database):
    settings = make_settings(UNSUBD_API_KEYS='["k-0123456789abcdef"]')
    auth = {"Authorization": "Bearer k-0123456789abcdef"}
    bounce = Action(ActionType.SUPPRESS, "gone@example.se", status="5.1.1", reason="user_unknown", hard=True)
    await apply(Decision(item_id="b1", kind=Kind.BOUNCE, actions=(bounce,), reason="dsn"), database.unit_of_work(), T0)
    await apply(Decision(item_id="r1", kind=Kind.OPTOUT, review=True, reason="unclear",
                         evidence={"from": "who@example.se"}), database.unit_of_work(), T0)
    async with TestClient(TestServer(build_app(settings, database.sessions, no_metrics, db=database))) as c:
        assert (await c.get("/v1/suppressions")).status == 401
        sups = await (await c.get("/v1/suppressions", headers=auth)).json()
        assert [(x["address"], x["reason"]) for x in sups["suppressions"]] == [("gone@example.se", "hard_bounce")]
        view = await (await c.get("/v1/contacts/Gone@Example.se", headers=auth)).json()
        assert view["suppressions"][0]["reason"] == "hard_bounce" and view["events"][0]["kind"] == "bounce"
        assert (await c.get("/v1/contacts/nobody@example.se", headers=auth)).status == 404
        assert (await c.get("/v1/contacts/not-an-address", headers=auth)).status == 400
        items = (await (await c.get("/v1/review", headers=auth)).json())["items"]
        assert [(i["kind"], i["address"]) for i in items] == [("decision", "who@example.se")]
