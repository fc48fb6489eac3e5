"""Daily sent counts (issue 24 item 4): POST /v1/sent-counts and the `sent_counts` queue item,
on SQLite and PostgreSQL. A report replaces the count for its (day, unit, channel); a
report with any bad entry is refused whole, naming the entry, and writes nothing."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from handlers.classify import classify
from handlers.context import Context
from handlers.model import Inbound, Kind, item_key
from worker.ingress.http import build_app
from worker.pipeline.consumer import Consumer
from worker.store.models import Event, SentCount
from tests.conftest import make_settings

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
TODAY = NOW.date()
KEYS = json.dumps([{"name": "mailer", "key": "w" * 32, "scopes": ["read", "write"]},
                   {"name": "viewer", "key": "r" * 32, "scopes": ["read"]}])
WRITE = {"Authorization": "Bearer " + "w" * 32}
READ = {"Authorization": "Bearer " + "r" * 32}


def settings_for(database, **env: str):
    return make_settings(database.engine.url.render_as_string(hide_password=False), **env)


async def no_metrics():
    return {}


async def stored(database) -> dict[tuple[date, str, str], tuple[int, str]]:
    async with database.sessions() as s:
        rows = (await s.scalars(select(SentCount))).all()
    return {(r.day, r.unit, r.channel): (r.count, r.reported_by) for r in rows}


def entry(days_ago: int = 1, unit: str = "alumni", channel: str = "email", count=1000) -> dict:
    return {"day": (TODAY - timedelta(days=days_ago)).isoformat(), "unit": unit, "channel": channel, "count": count}


@pytest.fixture
async def api(database):
    settings = settings_for(database, UNSUBD_API_KEYS=KEYS)
    app = build_app(settings, database.sessions, no_metrics, db=database, clock=lambda: NOW)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_report_is_stored_and_a_resend_replaces_it(api, database):
    r = await api.post("/v1/sent-counts", json={"counts": [entry(1), entry(1, channel="sms", count=7),
                                                          entry(2, unit="events", count=0)]}, headers=WRITE)
    assert (r.status, await r.json()) == (200, {"written": 3})
    day1, day2 = TODAY - timedelta(days=1), TODAY - timedelta(days=2)
    assert await stored(database) == {(day1, "alumni", "email"): (1000, "api:mailer"),
                                      (day1, "alumni", "sms"): (7, "api:mailer"),
                                      (day2, "events", "email"): (0, "api:mailer")}
    r = await api.post("/v1/sent-counts", json={"counts": [entry(1, count=1234)]}, headers=WRITE)
    assert r.status == 200
    assert (await stored(database))[day1, "alumni", "email"] == (1234, "api:mailer")
    assert len(await stored(database)) == 3


BAD = [
    (entry(unit="marketing"), 1, "not a configured unit"),
    (entry(channel="fax"), 1, "channel must be one of"),
    (entry(count=-1), 1, "whole number"),
    (entry(count=1.5), 1, "whole number"),
    (entry(count=True), 1, "whole number"),
    (entry(count="12"), 1, "whole number"),
    (entry(days_ago=-1), 1, "in the future"),
    (entry(days_ago=401), 1, "more than 400 days ago"),
    ({**entry(), "day": "2026-13-01"}, 1, "YYYY-MM-DD"),
    ({**entry(), "day": "20261201"}, 1, "YYYY-MM-DD"),
    (entry(), 1, "a second time"),
    ("alumni", 1, "must be an object"),
]


async def test_a_bad_entry_is_named_and_nothing_is_written(api, database):
    for bad, index, words in BAD:          # one database for all (each backend), a good entry before each
        r = await api.post("/v1/sent-counts", json={"counts": [entry(), bad]}, headers=WRITE)
        body = await r.json()
        assert r.status == 400 and body["entry"] == index and f"counts[{index}]" in body["error"], bad
        assert words in body["error"], (bad, body)
    for raw in (b"not json", b"[]", b'{"counts": []}', b'{"counts": {}}'):
        r = await api.post("/v1/sent-counts", data=raw, headers={**WRITE, "Content-Type": "application/json"})
        assert r.status == 400 and "error" in await r.json(), raw
    assert await stored(database) == {}


async def test_the_route_needs_the_write_scope(api, database):
    r = await api.post("/v1/sent-counts", json={"counts": [entry()]}, headers=READ)
    assert r.status == 403 and (await r.json())["scope"] == "write"
    r = await api.post("/v1/sent-counts", json={"counts": [entry()]})
    assert r.status == 401
    assert await stored(database) == {}


async def _through_the_consumer(database, body: dict) -> tuple[str, object]:
    settings = settings_for(database)
    ctx = Context.from_settings(settings)
    raw = json.dumps(body).encode()
    item = Inbound(id=item_key("test", raw), raw=raw, mail_from=None, rcpt_tos=(), received_at=NOW, source="queue")

    async def run_classify(item: Inbound, now: datetime):
        return classify(item, ctx, now)

    consumer = Consumer(settings, None, run_classify, database.unit_of_work, lambda: NOW, database=database)
    outcome = await consumer.handle(item, 1)
    async with database.sessions() as s:
        event = await s.scalar(select(Event).where(Event.item_id == item.id))
    return outcome.action, event


async def test_a_queue_item_is_stored_with_its_event_and_a_redelivery_changes_nothing(database):
    body = {"type": "sent_counts", "reported_by": "mailer-1",
            "counts": [entry(3, count=500), entry(3, unit="research-news", count=80)]}
    action, event = await _through_the_consumer(database, body)
    day = TODAY - timedelta(days=3)
    assert action == "done" and event.kind == Kind.IMPORT and not event.review
    assert await stored(database) == {(day, "alumni", "email"): (500, "mailer-1"),
                                      (day, "research-news", "email"): (80, "mailer-1")}
    action, _ = await _through_the_consumer(database, body)         # redelivered: the same rows
    assert action == "done" and len(await stored(database)) == 2
    async with database.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 1
    # A corrected figure for the same day, as a new report, replaces the count.
    action, _ = await _through_the_consumer(database, {**body, "counts": [entry(3, count=501)]})
    assert (await stored(database))[day, "alumni", "email"] == (501, "mailer-1")


async def test_a_bad_queue_item_goes_to_review_and_writes_no_count(database):
    body = {"type": "sent_counts", "counts": [entry(1), entry(1, unit="nobody")]}
    action, event = await _through_the_consumer(database, body)
    assert action == "done" and event.review and "counts[1].unit" in event.reason
    assert await stored(database) == {}
