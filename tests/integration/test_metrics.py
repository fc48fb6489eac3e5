"""/metrics with prometheus-client (issue 24 item 5): HELP and TYPE for every figure, counters and
gauges by name, the two histograms growing as mail is handled, the live gauges, and the
separate metrics listener. The output is read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from handlers.model import Action, ActionType, Decision, Kind
from handlers.state.apply import apply
from worker.app import Worker
from worker.ingress.http import build_app
from worker.ingress.metrics import FALLBACK_HELP, HELP
from tests.conftest import make_settings
from tests.integration.test_smtp import BOUNCES, send, wait_for
from tests.support.messages import dsn

FIGURES = {"consumer_applied_total": 3, "outbox_backlog": 2, "rights_requests_open": 4,
           "rights_requests_overdue": 1, "something_new_total": 5, "something_new_gauge": 0.5}


async def some_figures():
    return dict(FIGURES)


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_every_figure_has_help_and_type_and_its_kind(database):
    app = build_app(make_settings(), database.sessions, some_figures, db=database)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/metrics")
        text = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = families(text)
    for name, value in FIGURES.items():
        base = "unsubd_" + name.removesuffix("_total")     # the parser names a counter without _total
        family = found[base]
        assert family.type == ("counter" if name.endswith("_total") else "gauge"), name
        assert family.documentation == (HELP.get(name) or FALLBACK_HELP.format(name=name))
        (sample,) = [s for s in family.samples if not s.name.endswith("_created")]
        assert sample.value == value
    for line in (f"# HELP unsubd_consumer_applied_total {HELP['consumer_applied_total']}",
                 "# TYPE unsubd_consumer_applied_total counter", "# TYPE unsubd_outbox_backlog gauge"):
        assert line in text.splitlines()
    assert found["unsubd_update_latency_seconds"].type == "histogram"
    assert found["unsubd_classify_seconds"].type == "histogram"
    assert found["unsubd_queue_depth"].type == "gauge" and found["unsubd_outbox_lag_seconds"].type == "gauge"


async def test_the_live_gauges_show_the_outbox_lag(database):
    old = datetime.now(timezone.utc) - timedelta(minutes=10)
    bounce = Action(ActionType.SUPPRESS, "gone@example.se", status="5.1.1", reason="user_unknown", hard=True)
    await apply(Decision(item_id="b1", kind=Kind.BOUNCE, actions=(bounce,), reason="dsn"),
                database.unit_of_work(), old)
    app = build_app(make_settings(), database.sessions, some_figures, db=database)
    async with TestClient(TestServer(app)) as client:
        found = families(await (await client.get("/metrics")).text())
    (lag,) = found["unsubd_outbox_lag_seconds"].samples
    assert 590 <= lag.value <= 3600            # the update written ten minutes ago waits unpublished
    assert found["unsubd_queue_depth"].samples[0].value == 0


def _histogram(text: str, name: str) -> tuple[float, list[tuple[str, float]]]:
    family = families(text)[name]
    count = [s.value for s in family.samples if s.name == name + "_count"][0]
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name == name + "_bucket"]
    return count, buckets


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_histograms_grow_as_mail_is_handled_on_a_separate_listener(sqlite_url):
    w = Worker(make_settings(sqlite_url, UNSUBD_METRICS_PORT="0"))
    await w.start()
    try:
        http_port, metrics_port = w.http_address[1], w.metrics_address[1]
        assert metrics_port != http_port
        status, _ = await asyncio.to_thread(_get, http_port, "/metrics")
        assert status == 404                                # not on the public listener
        status, before = await asyncio.to_thread(_get, metrics_port, "/metrics")
        assert status == 200
        assert _histogram(before, "unsubd_update_latency_seconds")[0] == 0
        assert _histogram(before, "unsubd_classify_seconds")[0] == 0
        for n in range(2):
            assert await asyncio.to_thread(send, w.smtp_address[1], dsn(f"gone{n}@kommun-vast.example"),
                                           [BOUNCES]) == {}
        await wait_for(lambda: _applied(w, 2), timeout=30)
        status, after = await asyncio.to_thread(_get, metrics_port, "/metrics")
        for name in ("unsubd_update_latency_seconds", "unsubd_classify_seconds"):
            count, buckets = _histogram(after, name)
            assert count == 2, name
            assert buckets[-1] == ("+Inf", 2) and len(buckets) > 5
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)     # cumulative
        assert families(after)["unsubd_consumer_applied"].samples[0].value == 2
    finally:
        await w.stop()


async def _applied(w: Worker, n: int) -> bool:
    return (await w.metrics()).get("consumer_applied_total", 0) >= n
