"""/metrics in the Prometheus text format (0.0.4), with prometheus-client.

Each app (a Worker, or a test's build_app) owns its `Exporter`, and the exporter its own
CollectorRegistry: never the library's global one, which a process building several apps
(the tests do) would fill with clashing names.

What is shown:

* every key of worker.app.Worker.metrics(), as `unsubd_<key>`: a name ending `_total` is a
  counter, any other a gauge, each with a HELP line (HELP below, or a general one);
* `unsubd_queue_depth` and `unsubd_outbox_lag_seconds` (worker.ops.dashboard.live);
* two histograms the consumer observes into: `unsubd_update_latency_seconds`, from an
  item's acceptance (SMTP 250, or its enqueue) to the commit of its decision, which is
  when its updates are written; and `unsubd_classify_seconds`, how long classify took
  as the consumer saw it (with the parser processes: from handing the item over until
  the decision came back).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from typing import Any, Awaitable, Callable, Iterable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config import Settings
from worker.ingress.api_auth import bearer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "unsubd_"

# HELP texts of the names worker.app.Worker.metrics() and dashboard.live() give. A name
# not here (a new counter, a per-reason SMTP counter) gets FALLBACK_HELP.
HELP: dict[str, str] = {
    "inbound_pending": "Embedded queue items waiting to be handled.",
    "inbound_processing": "Embedded queue items being handled now.",
    "inbound_done": "Embedded queue items handled (kept as evidence).",
    "inbound_failed": "Embedded queue items parked after too many failed attempts.",
    "inbound_published_messages_total": "AMQP messages the SMTP listener published to the inbound queue.",
    "inbound_published_items_total": "Items the SMTP listener published to the inbound queue.",
    "consumer_dead_lettered_total": "Items the consumer dead-lettered to unsubd.inbound.dlq.",
    "consumer_batches_split_total": "Shared transactions that failed and were applied one decision at a time.",
    "consumer_applied_total": "Decisions applied (committed).",
    "consumer_duplicates_total": "Items that had been applied already (redelivered), changing nothing.",
    "consumer_retried_total": "Items that failed and will be tried again.",
    "consumer_parked_total": "Items parked after their last attempt.",
    "consumer_updates_total": "Updates for marketing systems written by applied decisions.",
    "consumer_outage_pauses_total": "Times the consumer paused for a database outage.",
    "consumer_released_total": "Items given back uncounted because the consumer stopped during an outage.",
    "consumer_recovered_total": "Embedded queue items of stopped consumers taken back.",
    "outbox_backlog": "Updates in the outbox not yet published.",
    "outbox_published_total": "Updates the relay published.",
    "outbox_handed_off_total": "Updates a consumer published itself right after its commit.",
    "outbox_handoff_failed_total": "Updates a consumer could not publish itself (a relay publishes them).",
    "smtp_accepted_total": "Messages accepted over SMTP (answered 250).",
    "smtp_deferred_total": "Messages deferred over SMTP (answered 4xx) because the queue was unavailable.",
    "smtp_sessions": "Open SMTP sessions.",
    "rights_requests_open": "Data-subject rights requests not yet settled.",
    "rights_requests_overdue": "Data-subject rights requests past their due date.",
    "queue_depth": "Inbound items waiting or in hand (embedded queue; 0 with RabbitMQ).",
    "outbox_lag_seconds": "Seconds the oldest unpublished update has waited (0 with none waiting).",
    "console_sign_in_limited_total": "Console sign-in attempts refused (429) by the per-client rate limit.",
}
FALLBACK_HELP = "unsubd figure {name} (counters end in _total; see README, Metrics)."

# 250 -> update: from a few milliseconds (embedded, idle) to minutes (a backlog, an outage).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, math.inf)
CLASSIFY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)


class ProcessCount:
    """A count kept by this process for every exporter in it (a scrape shows the process's
    figure, as Prometheus expects of a counter). For parts that have no exporter at hand:
    the console, built apart from the app's exporter, counts its rate-limited sign-ins here."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


CONSOLE_SIGN_IN_LIMITED = ProcessCount()


def help_for(name: str) -> str:
    return HELP.get(name) or FALLBACK_HELP.format(name=name)


class _Figures(Collector):
    """The figures of one scrape (`Exporter.render` sets them), as counters and gauges."""

    def __init__(self) -> None:
        self.values: Mapping[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        for name, value in sorted(self.values.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if name.endswith("_total"):
                yield CounterMetricFamily(PREFIX + name, help_for(name), value=value)
            else:
                yield GaugeMetricFamily(PREFIX + name, help_for(name), value=value)


class Exporter:
    """A registry of its own with the two histograms, and the text of one scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.update_latency = Histogram(
            "unsubd_update_latency_seconds",
            "Seconds from an item's acceptance (SMTP 250 or enqueue) to the commit of its decision and updates.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.classify_seconds = Histogram(
            "unsubd_classify_seconds",
            "Seconds classify took for one item, as the consumer saw it (parser processes included).",
            buckets=CLASSIFY_BUCKETS, registry=self.registry)
        self._figures = _Figures()
        self.registry.register(self._figures)

    def render(self, values: Mapping[str, Any]) -> bytes:
        """The exposition text of `values` (counters and gauges) and the histograms."""
        # Set and read without an await between: concurrent scrapes cannot mix their figures.
        self._figures.values = {"console_sign_in_limited_total": CONSOLE_SIGN_IN_LIMITED.value, **values}
        try:
            return generate_latest(self.registry)
        finally:
            self._figures.values = {}


# -- serving ------------------------------------------------------------------------------

Figures = Callable[[], Awaitable[Mapping[str, Any]]]


def _key_matches(given: str | None, keys: list[bytes]) -> bool:
    if given is None:
        return False
    data = given.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:                      # every key compared, each in constant time
        found = hmac.compare_digest(data, key) or found
    return found


def access_rule(settings: Settings) -> Callable[[web.Request], bool]:
    """Who may read /metrics: a key (metrics_keys or any of api_keys) from anywhere;
    without one, only a direct client in metrics_networks. A proxy in front (it says so
    with Forwarded or X-Forwarded-For) makes every client look local, so such a request
    needs a key. The same rule on the public listener and on a metrics listener."""
    keys = [k.encode() for k in settings.metrics_keys]
    keys += [k.key.get_secret_value().encode() if hasattr(k, "key") else str(k).encode() for k in settings.api_keys]
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.metrics_networks]

    def allowed(request: web.Request) -> bool:
        if _key_matches(bearer(request), keys):
            return True
        if "Forwarded" in request.headers or "X-Forwarded-For" in request.headers:
            return False
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            address = ipaddress.ip_address(peer[0]) if peer else None
        except (ValueError, TypeError, IndexError):
            address = None
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in networks)

    return allowed


def metrics_handler(settings: Settings, figures: Figures, exporter: Exporter,
                    live: Figures | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics: `figures()` (Worker.metrics) and `live()` (dashboard.live) rendered by `exporter`."""
    allowed = access_rule(settings)

    async def metrics_text(request: web.Request) -> web.Response:
        if not allowed(request):
            return web.json_response({"error": "/metrics: only from metrics_networks, or with Authorization: "
                                               "Bearer KEY (metrics_keys or api_keys)", "status": 403}, status=403)
        values = dict(await figures())
        if live is not None:
            now = await live()
            values.update({k: now[k] for k in ("queue_depth", "outbox_lag_seconds") if k in now})
        response = web.Response(body=exporter.render(values))
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    return metrics_text


def metrics_app(settings: Settings, figures: Figures, exporter: Exporter, live: Figures | None = None,
                ) -> web.Application:
    """An application with /metrics alone, for its own listener (metrics_host, metrics_port)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(settings, figures, exporter, live))
    return app
