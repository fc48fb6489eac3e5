"""Typed, frozen settings: UNSUBD_* environment variables over an optional TOML file.

`load(env, path)` is the only entry point. Tests pass a dict as `env` instead of
patching `os.environ`. Environment variables win over the file; nested values use a
double underscore (`UNSUBD_CONSUMER__MAX_ATTEMPTS=8`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "UNSUBD_"
UNIT_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LOCAL_PART = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class ConfigError(Exception):
    """A setting is missing or invalid. The message names the setting."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UnitNames(_Frozen):
    sv: str
    nb: str
    en: str


class Unit(_Frozen):
    """A sender unit: a department, office or project that sends communication."""

    key: str
    names: UnitNames
    aliases: tuple[str, ...] = ()            # other names people use for it in text
    from_addresses: tuple[str, ...] = ()     # addresses its mail is sent from
    reply_addresses: tuple[str, ...] = ()    # addresses that take replies for it
    list_ids: tuple[str, ...] = ()           # List-Id values its mailings carry
    # What an opt-out of this unit's email does besides the opt-out (issue 23, item 7): "keep"
    # the contact, or "erase" its address as `unsubd contacts erase` does, for a unit whose
    # notice promises that a newsletter address is deleted when someone unsubscribes
    # (handlers.state.plan, OnUnsubscribe). The tombstone keeps the address unsubscribed.
    on_unsubscribe: Literal["keep", "erase"] = "keep"

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not UNIT_KEY.match(v):
            raise ValueError("a unit key is lowercase letters, digits and '-', e.g. 'research-news'")
        return v

    @field_validator("from_addresses", "reply_addresses")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for a in v:
            local, at, domain = a.strip().rpartition("@")
            if not at or not LOCAL_PART.match(local) or not DOMAIN.match(domain):
                raise ValueError(f"not a plain address: {a!r}")
            out.append(f"{local.lower()}@{domain.lower()}")
        return tuple(out)


class SmtpSettings(_Frozen):
    max_message_size: int = Field(10 * 1024 * 1024, ge=1024)   # bytes; 552 beyond
    max_sessions: int = Field(200, ge=1)                          # concurrent connections; 421 beyond
    idle_timeout: float = Field(60.0, gt=0)                       # seconds without a command
    hostname: str = "unsubd.localdomain"                          # banner and HELO name
    # Fairness under floods (worker/ingress/smtp.py, ClientGate). A "client" is one IPv4 address,
    # or one IPv6 prefix of client_ipv6_prefix bits. Refusals are 421 4.7.0 and a close.
    per_client_sessions: int = Field(50, ge=0)        # concurrent sessions per client; 0: no cap
    per_client_rate: float = Field(20.0, ge=0)        # new connections per second per client; 0: no limit
    per_client_burst: int = Field(100, ge=1)          # ... of which this many at once (token bucket)
    # The rate is enforced only on a client already holding this many sessions, or on
    # every client while the listener is under stress (stress_threshold); 0: always. A
    # real MTA sending at full speed opens many short sessions (50 a second and more) but
    # holds few at once, within its own concurrency limit (Postfix's default per
    # destination is 20): it is not refused. Tokens are spent either way, so when stress
    # begins, the clients that were connecting fastest are the first slowed.
    rate_after_sessions: int = Field(20, ge=0)
    # The last reserved_slots of max_sessions go only to clients holding at most
    # heavy_client_sessions sessions, so one client can never take them all.
    reserved_slots: int = Field(20, ge=0)
    heavy_client_sessions: int = Field(4, ge=0)
    # Above stress_threshold x max_sessions, idle sessions get stress_idle_timeout instead
    # of idle_timeout (Postfix's stress mode does the same).
    stress_threshold: float = Field(0.8, gt=0, le=1)
    stress_idle_timeout: float = Field(10.0, gt=0)
    # During DATA, each received byte extends the session's deadline by 1/min_data_rate
    # seconds (never past the idle timeout from now), so a large message on a slow link
    # is not cut while a sender dribbling bytes is; 0: DATA must end within the idle timeout.
    min_data_rate: float = Field(500.0, ge=0)         # bytes per second
    # A message line longer than this gets 451 4.3.0 (transient, see worker/ingress/smtp.py);
    # shorter ones are accepted whatever RFC 5321's 1000 octets say. It is also what one
    # session may buffer of a line (up to twice this before reading pauses).
    max_line_length: int = Field(1024 * 1024, ge=1001)
    client_table_size: int = Field(10000, ge=16)      # clients whose connection rate is remembered
    client_ipv6_prefix: int = Field(64, ge=16, le=128)
    exempt_clients: tuple[str, ...] = ()              # networks (CIDR) free of per-client limits: own relays
    # STARTTLS (RFC 3207): PEM certificate chain and unencrypted key, reread on SIGHUP.
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False                         # MAIL before STARTTLS gets 530 5.7.0

    @field_validator("exempt_clients")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for text in v:
            try:
                out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"not an IP network: {text!r} (use e.g. 192.0.2.0/24 or 2001:db8::/32)") from None
        return tuple(out)

    @model_validator(mode="after")
    def _tls(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both smtp.tls_cert and smtp.tls_key, or neither")
        if self.require_tls and self.tls_cert is None:
            raise ValueError("smtp.require_tls needs smtp.tls_cert and smtp.tls_key")
        return self


class ConsumerSettings(_Frozen):
    # Embedded queue: items in flight at once; decisions ready together share a commit
    # (bench/pipeline.py, embedded, SMTP in to update out: 169-189/s with 32, 190-199/s
    # with 128). In production the broker's amqp.prefetch plays this part.
    concurrency: int = Field(128, ge=1)
    max_attempts: int = Field(5, ge=1)            # then the item is parked as failed
    retry_base: float = Field(1.0, gt=0)          # seconds; doubles per attempt, with jitter
    retry_max: float = Field(300.0, gt=0)
    poll_interval: float = Field(0.5, gt=0)       # embedded queue: seconds between polls when idle
    lease: float = Field(120.0, gt=0)             # embedded queue: seconds an item is claimed for
    # While the database is away (worker.errors.is_outage) the consumer pauses and probes
    # it, waiting this long at first, doubling up to the max, each with jitter; no item's
    # attempts are counted meanwhile.
    outage_backoff_base: float = Field(0.5, gt=0)
    outage_backoff_max: float = Field(15.0, gt=0)
    # A `serve` process that runs the consumer but not the SMTP listener adds this to its
    # nice value (0..19; 0 leaves it alone). Accepting mail is latency work with a sender
    # waiting; consuming is batch work behind a durable queue. On a shared box, the
    # listener then takes the CPU it needs during a burst and the queue absorbs it
    # (bench/pipeline.py, production, accept beside a consumer: see README, Status).
    nice: int = Field(19, ge=0, le=19)
    # Lanes (issue 22): an item of more than heavy_bytes (raw bytes) is heavy. At most
    # heavy_concurrency heavy items are in flight at once (embedded queue: claimed; in
    # production the bulk queue's prefetch, worker/queue/amqp.py), never all of
    # `concurrency` (at most concurrency - 1), so ordinary items always have slots and
    # overtake heavy ones waiting in the queue. Ordinary bounces and replies are a few KB;
    # the hostile burst's messages are 300 KB.
    heavy_bytes: int = Field(64 * 1024, ge=1024)
    heavy_concurrency: int = Field(8, ge=1)


class ParseSettings(_Frozen):
    workers: int = Field(2, ge=1)                 # sandboxed parser processes
    cpu_seconds: float = Field(5.0, gt=0)         # CPU time one message may take
    wall_seconds: float = Field(15.0, gt=0)       # wall time one message may take
    memory_mb: int = Field(1024, ge=64)           # address space of one parser process
    # Lanes (worker/pipeline/pool.py): heavy items (over consumer.heavy_bytes, or running
    # longer than slow_seconds) may hold at most workers - light_workers processes (at
    # least one); light_workers stay for ordinary items, which are also served first.
    # When slow items hold more than that, up to light_workers extra processes start for
    # ordinary items: the pool has at most workers + light_workers processes.
    light_workers: int = Field(1, ge=1)
    slow_seconds: float = Field(1.0, gt=0)


class AmqpSettings(_Frozen):
    """RabbitMQ names and limits (production mode, with amqp_url set)."""

    inbound_queue: str = "unsubd.inbound"             # quorum queue: raw mail and JSON items
    dead_letter_exchange: str = "unsubd.dlx"
    dead_letter_queue: str = "unsubd.inbound.dlq"     # parked items, with x-unsubd-error
    updates_exchange: str = "unsubd.updates"          # topic: preference.<unit>.<channel>, suppression.<reason>
    # Unacknowledged deliveries per consumer: what keeps its batches full (bench/pipeline.py,
    # 16 -> 128 took the whole box from ~150 to ~180 messages/s). The consumer may hold
    # prefetch x smtp.max_message_size bytes of mail at once.
    prefetch: int = Field(128, ge=1)
    publish_timeout: float = Field(5.0, gt=0)         # seconds to wait for a publisher confirm
    # A listener publishes the messages accepted while its previous publish awaited the
    # broker's confirm together, as one inbound message of up to this many items and
    # bytes (one larger item goes alone); 1 publishes every item on its own. Under load
    # this took a listener with no consumer beside it from about 0.6 of a bare aiosmtpd
    # to about 1 (bench/pipeline.py, accept_listener_alone).
    inbound_batch: int = Field(64, ge=1, le=1000)
    inbound_batch_bytes: int = Field(1024 * 1024, ge=1)
    reconnect_interval: float = Field(1.0, gt=0)


class BounceSettings(_Frozen):
    """The soft-bounce policy: repeated temporary failures suppress an address too."""

    soft_threshold: int = Field(3, ge=1)          # soft bounces within the window that suppress
    soft_window_days: float = Field(30.0, gt=0)   # older soft bounces no longer count (decay)
    # With true, a bounce to the plain bounce address (no signed return path) is counted
    # but never suppresses on its own, like one whose return path is unsigned or forged.
    # Turn it on once every sender uses the signed return paths of `unsubd token`.
    require_signed_return_path: bool = False
    # One message of ours goes to one recipient, so a bounce that names more failed (or
    # delivered) addresses than this, besides the one a signed return path names, is not
    # a report about our mail: those addresses are recorded, not acted on, and the bounce
    # goes to review (a forged DSN naming thousands of addresses, issue 22).
    max_recipients_per_report: int = Field(5, ge=1)


class ComplaintSettings(_Frozen):
    """Which feedback loops' spam complaints (ARF, JMRP, SES) are acted on without a person."""

    # The feedback-loop sources whose reports are believed: a domain (the report's DKIM
    # signature, d=, is this domain or under it) or an address (the report's From is
    # that address and its signature is aligned with the address's domain). The proof is
    # a DKIM signature that verifies, or a dkim=pass (or dmarc=pass) for such a domain in
    # the Authentication-Results of one of `trusted_authserv_ids`. Empty: every complaint
    # goes to review. List a loop's own signing domain or address, not a mailbox
    # service's domain its users can sign mail with.
    fbl_sources: tuple[str, ...] = ()

    @field_validator("fbl_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for entry in v:
            value = entry.strip().lower().rstrip(".")
            local, at, domain = value.rpartition("@")
            if (at and not LOCAL_PART.match(local)) or not DOMAIN.match(domain):
                raise ValueError(f"not a domain or plain address: {entry!r}")
            out.append(value)
        return tuple(out)


class TokenSettings(_Frozen):
    """Unsubscribe-link signing keys. With no keys, the embedded (SQLite) mode creates one
    beside the database file on first start (worker/store/keys.py); production sets them."""

    keys: dict[str, SecretStr] = {}               # key id -> secret (at least 32 characters)
    active: str | None = None                     # the key that signs new links; default: the only key
    base_url: str = "http://127.0.0.1:8025"       # public base URL of the links (https in production)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in v.items():
            if not re.match(r"^[A-Za-z0-9_-]{1,16}$", key_id):
                raise ValueError(f"key id {key_id!r}: use 1 to 16 letters, digits, '-' or '_'")
            if len(secret.get_secret_value().encode("utf-8")) < 32:
                raise ValueError(f"key {key_id!r} is too short: use at least 32 random characters")
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", v):
            raise ValueError(f"not an http(s) URL without query: {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _active(self) -> TokenSettings:
        if self.active is not None and self.active not in self.keys:
            raise ValueError(f"active key {self.active!r} is not one of tokens.keys ({', '.join(self.keys) or 'none'})")
        if self.active is None and len(self.keys) > 1:
            raise ValueError("several keys: set tokens.active to the one that signs new links")
        return self

    @property
    def active_key_id(self) -> str | None:
        return self.active or next(iter(self.keys), None)


API_SCOPES = ("read", "write", "admin")
API_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
MIN_API_KEY = 16


class ApiKey(_Frozen):
    """A bearer key for /v1/: its name (the audit trail records `api:<name>`), the key itself,
    and its scopes: `read` (GET routes), `write` (POST /v1/tokens), `admin` (erasure, change of
    address). A plain string in `api_keys` is a key named `key-1`, `key-2`, ... by its
    position, with `read` and `write`."""

    name: str
    key: SecretStr
    scopes: tuple[str, ...] = ("read", "write")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not API_KEY_NAME.match(v):
            raise ValueError(f"key name {v[:80]!r}: use 1 to 60 letters, digits, '.', '-' or '_'")
        return v

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in API_SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}: use {', '.join(API_SCOPES)}")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _long_enough(self) -> ApiKey:
        if len(self.key.get_secret_value()) < MIN_API_KEY:
            raise ValueError(f"key {self.name!r} is too short: use at least {MIN_API_KEY} random characters")
        return self


class RelaySettings(_Frozen):
    poll_interval: float = Field(0.2, gt=0)
    batch: int = Field(100, ge=1)
    # Production: an idle consumer publishes the updates it commits itself, at once,
    # instead of waiting for a relay to wake and claim them (bench/pipeline.py: 2 to 5 ms
    # less from 250 to update at 100/s). Relays leave such rows alone for `handoff_lease`
    # seconds, then publish whatever is still unpublished (the consumer died, the broker
    # refused).
    handoff: bool = True
    handoff_lease: float = Field(5.0, gt=0)


def _period(v: str) -> str:
    from config.periods import PeriodError, parse_period

    try:
        parse_period(v)
    except PeriodError as exc:
        raise ValueError(str(exc)) from None
    return v


class RetentionContacts(_Frozen):
    """How long a contact is kept after its last interaction, by kind (worker.ops.retention).

    A contact is `alumni` when it is on (has a membership of) one of `retention.alumni_units`,
    and `non_alumni` otherwise. The privacy notice promises non-alumni five years.
    """

    non_alumni: str = "5y"
    alumni: str = "keep"

    @field_validator("non_alumni", "alumni")
    @classmethod
    def _periods(cls, v: str) -> str:
        return _period(v)


class RetentionSettings(_Frozen):
    """How long each class of records is kept, and when `serve` removes what is older (issue 23).

    Each period is `30d`, `6w`, `6m`, `5y` (days, weeks, calendar months, years) or `keep`.
    The defaults keep the privacy notice's promise and remove nothing anyone relies on:
    raw received mail 6 months (the decision and its evidence stay), the free text of
    evidence 5 years, events themselves for ever, resolved review items 2 years,
    non-alumni contacts 5 years after their last interaction, alumni for ever.
    """

    enabled: bool = True                          # serve runs it daily (a process with the consumer role)
    run_at: str = "03:30"                         # HH:MM, UTC
    interval: float | None = Field(None, gt=0)    # seconds between runs instead of daily at run_at
    batch: int = Field(500, ge=1, le=10000)       # contacts (or rows) per transaction
    alumni_units: tuple[str, ...] = ("alumni",)   # a member of one of these units is an alumnus
    raw_mail: str = "6m"                          # inbound_item.raw of handled items, after receipt
    evidence: str = "5y"                          # event.evidence and event.reason, replaced by a marker
    events: str = "keep"                          # whole events no current row refers to (else emptied)
    review_items: str = "2y"                      # resolved review items, after their resolution
    contacts: RetentionContacts = RetentionContacts()

    @field_validator("raw_mail", "evidence", "events", "review_items")
    @classmethod
    def _periods(cls, v: str) -> str:
        return _period(v)

    @field_validator("run_at")
    @classmethod
    def _run_at(cls, v: str) -> str:
        if not re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", v):
            raise ValueError(f"not a time of day: {v!r} (use HH:MM in UTC, e.g. 03:30)")
        return v


class ConsoleSettings(_Frozen):
    """The operator console under /console/ (worker.console)."""

    enabled: bool = True
    # Session and sign-in cookies carry `Secure`. Browsers treat http://127.0.0.1 and
    # http://localhost as secure, so this stays on for local use; turn it off only to
    # sign in over plain http from another host (a test machine).
    cookie_secure: bool = True
    session_hours: float = Field(8.0, gt=0, le=24 * 30)
    # This many wrong passwords in a row lock the account for `lockout_minutes`.
    lockout_after: int = Field(5, ge=1, le=100)
    lockout_minutes: float = Field(15.0, gt=0)
    # A session unused for this long is refused, and its user is sent to sign in again.
    session_idle_minutes: float = Field(30.0, gt=0, le=24 * 60)
    # Sign-in attempts per client address (an IPv6 client by its /64): a bucket of
    # `signin_burst` attempts that refills at `signin_per_minute`; an empty bucket is
    # answered 429. At most `signin_clients` addresses are remembered (the least
    # recently seen are forgotten first), so a flood of addresses cannot grow memory.
    signin_per_minute: float = Field(10.0, gt=0)
    signin_burst: int = Field(20, ge=1, le=1000)
    signin_clients: int = Field(10_000, ge=100, le=10_000_000)


class Settings(BaseSettings):
    """Everything unsubd reads from its environment. Frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    database_url: str = "sqlite+aiosqlite:///./unsubd.db"
    # `serve` started while the database or the broker is away waits up to this many
    # seconds for it (worker.app.until_reachable), then exits with the error.
    startup_wait: float = Field(120.0, ge=0)
    amqp_url: str | None = None                   # unset: the embedded queue in the database
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(2525, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8025, ge=0, le=65535)
    api_keys: tuple[ApiKey, ...] = ()             # bearer keys for /v1/ (ApiKey); none: /v1/ only on loopback
    # /metrics: served without a key only to clients in these networks (a request that
    # came through a proxy, with Forwarded or X-Forwarded-For, is never one of them);
    # from anywhere else it needs `Authorization: Bearer K` with K one of metrics_keys
    # or api_keys. Empty networks: a key always.
    metrics_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    metrics_keys: tuple[str, ...] = ()
    # With metrics_port set, /metrics is served only on its own listener (metrics_host,
    # metrics_port), apart from the public pages, with the same access rules.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    log_level: str = "INFO"

    organisation: str = "Example organisation"
    dpo_contact: str = "dpo@example.org"

    mail_domain: str = "localhost"                # where reply@, bounces@, fbl@ and unsubscribe@ live
    bounce_domain: str | None = None              # the VERP return-path domain; default mail_domain
    reply_local: str = "reply"
    bounce_local: str = "bounces"
    fbl_local: str = "fbl"
    unsubscribe_local: str = "unsubscribe"

    units: dict[str, Unit] = {}

    smtp: SmtpSettings = SmtpSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    parse: ParseSettings = ParseSettings()
    relay: RelaySettings = RelaySettings()
    amqp: AmqpSettings = AmqpSettings()
    bounces: BounceSettings = BounceSettings()
    # authserv-ids (RFC 8601) of our own receiving MTAs: only their Authentication-Results
    # can verify a sender; any other such header is ignored (RFC 8601 section 5).
    trusted_authserv_ids: tuple[str, ...] = ()
    # More unverified emailed opt-outs than this in one hour: the next go to review
    # (a guard against mass spoofing); 0 turns the guard off.
    unverified_optouts_per_hour: int = Field(200, ge=0)
    # What a spam complaint unsubscribes: the email of the unit the reported mail came
    # from ("unit"; every unit when it cannot be told), or every unit's email ("all").
    complaint_scope: Literal["unit", "all"] = "unit"
    complaints: ComplaintSettings = ComplaintSettings()
    tokens: TokenSettings = TokenSettings()
    retention: RetentionSettings = RetentionSettings()
    console: ConsoleSettings = ConsoleSettings()

    @model_validator(mode="before")
    @classmethod
    def _unit_keys(cls, data: Any) -> Any:
        # A unit's key is its table name in TOML; fill it in so each Unit knows its key.
        if isinstance(data, dict) and isinstance(data.get("units"), dict):
            units = {}
            for key, unit in data["units"].items():
                if isinstance(unit, dict):
                    unit = {"key": key, **unit}
                units[key] = unit
            data = {**data, "units": units}
        return data

    @field_validator("api_keys", mode="before")
    @classmethod
    def _plain_api_keys(cls, v: Any) -> Any:
        # A plain string is a key named by its position, with read and write (as before names and scopes).
        if isinstance(v, (list, tuple)):
            return [{"name": f"key-{i}", "key": k} if isinstance(k, str) else k for i, k in enumerate(v, 1)]
        return v

    @field_validator("api_keys")
    @classmethod
    def _unique_api_keys(cls, v: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names = [k.name for k in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"key names must be unique: {', '.join(twice)} used more than once")
        secrets = [k.key.get_secret_value() for k in v]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two keys are the same: each key needs its own secret")
        return v

    @field_validator("mail_domain", "bounce_domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not DOMAIN.match(v):
            raise ValueError(f"not a domain name: {v!r}")
        return v.lower() if v else v

    @field_validator("reply_local", "bounce_local", "fbl_local", "unsubscribe_local")
    @classmethod
    def _local(cls, v: str) -> str:
        if not LOCAL_PART.match(v) or "+" in v:
            raise ValueError(f"not a plain local part: {v!r}")
        return v.lower()

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB")
        return v

    @field_validator("amqp_url")
    @classmethod
    def _amqp(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("amqp://") or v.startswith("amqps://")):
            raise ValueError("use amqp://USER:PASSWORD@HOST:5672/VHOST (or amqps://), or leave it unset")
        return v or None

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"not a network: {net!r} (use 127.0.0.0/8, 10.1.2.3/32, ::1/128)") from None
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return v

    @model_validator(mode="after")
    def _checks(self) -> Settings:
        for key, unit in self.units.items():
            if unit.key != key:
                raise ValueError(f"unit {key!r} has key {unit.key!r}")
        if not self.api_keys and not _is_loopback(self.http_host):
            raise ValueError(
                "api_keys: the JSON API would be open on a non-loopback address; set UNSUBD_API_KEYS"
            )
        return self

    @model_validator(mode="after")
    def _alumni_units(self) -> Settings:
        # Named on purpose, an alumni unit must exist; the default names none that matters
        # when the organisation has no `alumni` unit (then every contact is non-alumni).
        if "alumni_units" in self.retention.model_fields_set and self.units:
            unknown = [u for u in self.retention.alumni_units if u not in self.units]
            if unknown:
                raise ValueError(f"retention.alumni_units: unknown unit(s) {', '.join(unknown)} "
                                 f"(configured: {', '.join(self.units)})")
        return self

    @property
    def effective_bounce_domain(self) -> str:
        return self.bounce_domain or self.mail_domain

    @property
    def embedded_queue(self) -> bool:
        return self.amqp_url is None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _MappingEnvSource(settings_cls, _ENV.get())]
        path = _TOML.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


_ENV: ContextVar[Mapping[str, str]] = ContextVar("unsubd_env", default={})
_TOML: ContextVar[Path | None] = ContextVar("unsubd_toml", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setting_name(loc: tuple[Any, ...]) -> str:
    keys = [str(p) for p in loc if not isinstance(p, int)]
    dotted = ".".join(keys) or "(settings)"
    env = ENV_PREFIX + "__".join(keys).upper() if keys else ""
    return f"{dotted} ({env})" if env else dotted


def load(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Settings:
    """Load settings from `env` (default: os.environ) and an optional TOML file.

    `UNSUBD_CONFIG` in `env` names the file when `path` is not given. Raises
    ConfigError with a message that names the offending setting.
    """
    env = dict(os.environ if env is None else env)
    if path is None and env.get("UNSUBD_CONFIG"):
        path = env["UNSUBD_CONFIG"]
    env = {k: v for k, v in env.items() if k.upper() != "UNSUBD_CONFIG"}
    toml_path: Path | None = None
    if path is not None:
        toml_path = Path(path)
        if not toml_path.is_file():
            raise ConfigError(f"config file not found: {toml_path}")
        try:
            with toml_path.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {toml_path} is not valid TOML: {exc}") from None
    t_env, t_toml = _ENV.set(env), _TOML.set(toml_path)
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"invalid setting {_setting_name(err['loc'])}: {msg}")
        raise ConfigError("; ".join(problems)) from None
    finally:
        _ENV.reset(t_env)
        _TOML.reset(t_toml)
