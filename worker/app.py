"""The composition root: builds every part from one Settings and runs the chosen roles."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable


from config import ConfigError, Settings
from handlers.model import Inbound
from worker.store import migrate
from worker.queue.amqp import AmqpConsumer, AmqpEnqueue, AmqpPublisher, Broker
from worker.pipeline.consumer import Consumer
from worker.store.db import Database, redact_url
from worker.ingress.http import HttpServer, build_app
from worker.ingress.metrics import Exporter, metrics_app
from worker.ops import dashboard
from worker.ops import requests as rights_requests
from worker.store.keys import keyring_for, settings_with_keys
from worker.store.units import sync_units
from worker.errors import is_outage
from worker.pipeline.dkim_keys import classify_with_dns
from worker.pipeline.pool import ClassifyPool
from worker.queue.embedded import EmbeddedQueue
from worker.outbox.relay import FeedPublisher, Handoff, Relay
from worker.ingress.smtp import SmtpIngress, SmtpServer
from worker.ops.retention import RunResult as RetentionResult, run_daily

log = logging.getLogger("unsubd")

ROLES = ("smtp", "http", "consumer", "relay")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_roles(text: str | Iterable[str]) -> tuple[str, ...]:
    roles = [r.strip() for r in (text.split(",") if isinstance(text, str) else text) if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError(f"--role takes a comma-separated list of {', '.join(ROLES)}; got {','.join(roles) or 'nothing'}")
    return tuple(dict.fromkeys(roles))


async def prepare_database(settings: Settings, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
    """Embedded (SQLite): migrate to the newest schema. PostgreSQL: refuse to run on an old one,
    since many processes starting at once must not race to migrate it (`unsubd db upgrade` does)."""
    if db.engine.dialect.name == "sqlite":
        await migrate.upgrade(db.engine)
    elif await migrate.current(db.engine) != migrate.head():
        raise ConfigError(f"the database {redact_url(settings.database_url)} is not at the newest schema; "
                          "run `unsubd db upgrade` first")
    await sync_units(settings, db, clock())
    db.tombstone_keys = keyring_for(settings)      # erased addresses are found by their keyed hash
    db.erase_on_unsubscribe = frozenset(k for k, u in settings.units.items() if u.on_unsubscribe == "erase")
    if db.erase_on_unsubscribe and db.tombstone_keys is None:
        # Without keys an erasure cannot leave its tombstone, so the unit's promise (the
        # address is deleted when someone unsubscribes) would quietly not be kept.
        raise ConfigError(f"units {', '.join(sorted(db.erase_on_unsubscribe))} erase an address on unsubscribe "
                          "(on_unsubscribe = \"erase\"), which needs keys to hash erased addresses with: "
                          "set tokens.keys (UNSUBD_TOKENS__KEYS)")


async def until_reachable(what: str, attempt: Callable[[], Awaitable[None]], settings: Settings) -> None:
    """Run `attempt` until it does not fail for an outage (worker.errors.is_outage), waiting
    between tries as the consumer does in an outage (consumer.outage_backoff_base, doubling
    up to outage_backoff_max, with jitter), for at most `startup_wait` seconds; then the
    last error is raised. A process started while PostgreSQL or RabbitMQ is away (a
    restart during an outage) waits for it instead of exiting; any other error is raised
    at once (a wrong password, an old schema)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_wait
    delay = settings.consumer.outage_backoff_base
    tries = 0
    while True:
        try:
            await attempt()
            if tries:
                log.info("%s reachable again; starting", what)
            return
        except Exception as exc:              # noqa: BLE001 - judged below; anything but an outage is raised
            tries += 1
            left = deadline - loop.time()
            if not is_outage(exc) or left <= 0:
                raise
            wait = min(left, delay * random.uniform(0.5, 1.0))
            log.warning("%s not reachable at start (%s); trying again in %.1f s", what, type(exc).__name__, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, settings.consumer.outage_backoff_max)


class Worker:
    """One `unsubd serve` process: SMTP, HTTP, consumer and relay, or a subset of them."""

    def __init__(self, settings: Settings, roles: Iterable[str] = ROLES,
                 clock: Callable[[], datetime] = utcnow, pool: ClassifyPool | None = None) -> None:
        # The embedded key file's keys go into the settings, so that the sandboxed
        # classifier verifies mailto tokens with the same keys as the HTTP side.
        settings = settings_with_keys(settings)
        self.settings = settings
        self.roles = parse_roles(roles)
        self.clock = clock
        self.db = Database.connect(settings.database_url)
        self.queue = EmbeddedQueue(self.db, settings, clock)
        self.relay = Relay(settings, self.db, FeedPublisher(), clock)
        self.pool = pool
        self.broker: Broker | None = Broker(settings) if settings.amqp_url else None
        self.amqp_consumer: AmqpConsumer | None = None
        self.amqp_enqueue: AmqpEnqueue | None = None
        self.consumer: Consumer | None = None
        self.handoff: Handoff | None = None
        self.smtp: SmtpServer | None = None
        self.http: HttpServer | None = None
        self._stopping = asyncio.Event()
        self._relay_stopping = asyncio.Event()     # set only once the consumer has finished
        self._consumer_task: asyncio.Task[None] | None = None
        self._relay_task: asyncio.Task[None] | None = None
        # Retention (worker.ops.retention): a process with the consumer role runs it daily;
        # each run's result is kept here (tests and /metrics read it).
        self.retention_runs: list[RetentionResult] = []
        self._retention_task: asyncio.Task[None] | None = None
        self.smtp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        # /metrics: this process's registry and histograms (worker.ingress.metrics), and its own
        # listener when metrics_port is set.
        self.exporter = Exporter()
        self.metrics_http: HttpServer | None = None
        self.metrics_address: tuple[str, int] | None = None

    async def start(self) -> None:
        await until_reachable("database", lambda: prepare_database(self.settings, self.db, self.clock),
                              self.settings)
        enqueue: Callable[[Inbound], Awaitable[bool]] = self.queue.put
        if self.broker is not None:
            await until_reachable("RabbitMQ", self.broker.connect, self.settings)
            if "smtp" in self.roles:
                self.amqp_enqueue = AmqpEnqueue(self.broker, self.settings)
                await self.amqp_enqueue.start()
                enqueue = self.amqp_enqueue
            if "relay" in self.roles:
                publisher = AmqpPublisher(self.broker)
                await publisher.start()
                self.relay.publisher = publisher
        if "consumer" in self.roles:
            if self.pool is None:
                self.pool = ClassifyPool(self.settings, classify_fn=classify_with_dns)   # DKIM keys of FBL reports
            await self.pool.warm_up()
            if self.broker is not None and self.settings.relay.handoff:
                own = AmqpPublisher(self.broker)
                await own.start()
                self.handoff = Handoff(self.settings, self.db, own, self.clock)
            self.consumer = Consumer(self.settings, self.queue if self.broker is None else None,
                                     self.pool.classify, self.db.unit_of_work, self.clock, database=self.db,
                                     handoff=self.handoff, timings=self.exporter)
            if self.broker is None:
                run = self.consumer.run(self._stopping)
            else:
                self.amqp_consumer = AmqpConsumer(self.broker, self.consumer, self.settings, self.clock)
                run = self.amqp_consumer.run(self._stopping)
            self._consumer_task = asyncio.create_task(run, name="consumer")
        if "relay" in self.roles:
            self._relay_task = asyncio.create_task(self.relay.run(self._relay_stopping), name="relay")
        if runs_retention(self.settings, self.roles):
            self._retention_task = asyncio.create_task(
                run_daily(self.db, self.settings, self._stopping, self.clock, self.retention_runs.append),
                name="retention")
        if "http" in self.roles:
            feed_changed = self.relay.feed_changed if "relay" in self.roles else None
            self.http = HttpServer(self.settings, build_app(self.settings, self.db.sessions, self.metrics,
                                                             db=self.db, clock=self.clock,
                                                             feed_changed=feed_changed, exporter=self.exporter))
            self.http_address = await self.http.start()
            if self.settings.metrics_port is not None:
                app = metrics_app(self.settings, self.metrics, self.exporter,
                                  lambda: dashboard.live(self.db, self.settings))
                self.metrics_http = HttpServer(self.settings, app, self.settings.metrics_host,
                                               self.settings.metrics_port)
                self.metrics_address = await self.metrics_http.start()
        if "smtp" in self.roles:
            self.smtp = SmtpServer(self.settings, SmtpIngress(self.settings, enqueue, self.clock))
            self.smtp_address = await self.smtp.start()
        log.info("unsubd started", extra={"roles": ",".join(self.roles),
                                          "database": redact_url(self.settings.database_url)})

    async def stop(self) -> None:
        """Stop accepting, finish the items in flight, publish what was committed, close."""
        if self.smtp is not None:
            await self.smtp.stop()
        self._stopping.set()
        if self._retention_task is not None:
            await asyncio.gather(self._retention_task, return_exceptions=True)
        # The consumer finishes its items first, so the relay's last drain publishes their updates.
        if self._consumer_task is not None:
            await asyncio.gather(self._consumer_task, return_exceptions=True)
        if self.handoff is not None:
            await self.handoff.close()
        self._relay_stopping.set()
        if self._relay_task is not None:
            await asyncio.gather(self._relay_task, return_exceptions=True)
        if self.http is not None:
            await self.http.stop()
        if self.metrics_http is not None:
            await self.metrics_http.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.broker is not None:
            await self.broker.close()
        await self.db.close()
        log.info("unsubd stopped")

    async def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.broker is None:
            out.update({f"inbound_{k}": v for k, v in (await self.queue.counts()).items()})
        elif self.amqp_consumer is not None:
            out["consumer_dead_lettered_total"] = self.amqp_consumer.dead_lettered
            out["consumer_batches_split_total"] = self.amqp_consumer.batches_split
        if self.amqp_enqueue is not None:
            # Items over messages is the listener's mean batch size.
            out["inbound_published_messages_total"] = self.amqp_enqueue.messages
            out["inbound_published_items_total"] = self.amqp_enqueue.items
        out["outbox_backlog"] = await self.relay.backlog()
        out["outbox_published_total"] = self.relay.published
        # Rights requests (worker.ops.requests): open, and past their due day (GDPR Art. 12(3)).
        open_rights, overdue_rights = await rights_requests.counts(self.db, self.clock())
        out["rights_requests_open"], out["rights_requests_overdue"] = open_rights, overdue_rights
        if self.handoff is not None:
            out["outbox_handed_off_total"] = self.handoff.published
            out["outbox_handoff_failed_total"] = self.handoff.failed
        if self.smtp is not None:
            out["smtp_accepted_total"] = self.smtp.ingress.accepted
            out["smtp_deferred_total"] = self.smtp.ingress.deferred
            out["smtp_sessions"] = self.smtp.sessions
            out.update(self.smtp.counters())
        if self.consumer is not None:
            c = self.consumer.counters
            out.update(consumer_applied_total=c.applied, consumer_duplicates_total=c.duplicates,
                       consumer_retried_total=c.retried, consumer_parked_total=c.parked,
                       consumer_updates_total=c.updates, consumer_outage_pauses_total=c.outage_pauses,
                       consumer_released_total=c.released, consumer_recovered_total=c.recovered)
            out.update({f"consumer_suspect_{name}_total": n for name, n in c.suspect_reports.items()})
        return out


def runs_retention(settings: Settings, roles: Iterable[str]) -> bool:
    """Whether this process runs retention daily: with `retention.enabled`, in a process with
    the consumer role (the one that writes state anyway). Several such processes may run:
    on PostgreSQL an advisory lock lets one run at a time (worker.ops.retention)."""
    return settings.retention.enabled and "consumer" in parse_roles(roles)


def lower_priority(settings: Settings, roles: Iterable[str]) -> int | None:
    """A process that consumes but does not accept mail yields the CPU to one that does:
    it adds `consumer.nice` to its nice value (its parser processes, started later,
    inherit it). Returns the new nice value, or None when it stays as it was."""
    roles = parse_roles(roles)
    if "consumer" not in roles or "smtp" in roles or settings.consumer.nice == 0:
        return None
    return os.nice(settings.consumer.nice)


async def serve(settings: Settings, roles: Iterable[str] = ROLES) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; returns the exit status."""
    niceness = lower_priority(settings, roles)
    if niceness is not None:
        log.info("consumer without a listener: CPU priority lowered", extra={"nice": niceness})
    worker = Worker(settings, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP rereads the SMTP TLS certificate and key (renewed certificates) for new connections.
    loop.add_signal_handler(signal.SIGHUP, lambda: worker.smtp is not None and worker.smtp.reload_tls())
    try:
        await worker.start()
    except BaseException:
        await worker.stop()
        raise
    print(f"unsubd serving: smtp {worker.smtp_address}, http {worker.http_address}", flush=True)
    await stop.wait()
    log.info("signal received, shutting down")
    await worker.stop()
    return 0
