"""The SMTP listener: aiosmtpd on the worker's own event loop. Adapts, never decides.

Promise 1 (DESIGN.md): `250` only after the item is durably stored; anything else
answers 4xx so the sending MTA keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from config import ConfigError, Settings
from handlers.mail.addresses import address_hash
from handlers.model import Inbound
from handlers.routing import Router

log = logging.getLogger("unsubd.smtp")

REPLY_OK = "250 2.1.5 OK"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient not accepted here (no relay)"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure storing the message, try again later"
REPLY_BUSY = "421 4.3.2 Too many connections, try again later"
REPLY_CLIENT_SESSIONS = "421 4.7.0 Too many connections from your address, try again later"
REPLY_CLIENT_RATE = "421 4.7.0 Too many new connections from your address, slow down and try again later"
REPLY_RESERVED = "421 4.7.0 Server nearly full and your address holds several connections, try again later"
REPLY_IDLE = "421 4.4.2 Idle for too long, closing connection"
# An over-long line in DATA. aiosmtpd answers it with a permanent "500 Line too long";
# the sending MTA then returns the message to its sender, and a bounce (null sender)
# has none, so it is discarded: the hard bounce is lost. A 4xx keeps the message in
# the sender's queue while an operator can still raise smtp.max_line_length, and it
# shows in the log and in /metrics (smtp_line_too_long_total). Its cost, a sender
# retrying a message that will never fit until its queue lifetime ends, is why the
# limit is generous: 1 MiB by default, where RFC 5321 section 4.5.3.1.6 allows 1000
# octets with CRLF. Postfix's client folds longer lines before sending
# (smtp_line_length_limit), but not every sender does (unwrapped HTML in returned
# messages); in the shared corpus 10 of 899 files have a line over 1000 octets, the
# longest 1245. The message size limit (552) still bounds the whole.
REPLY_LINE_TOO_LONG = "451 4.3.0 Line too long for this server, message not stored, try again later"
REPLY_NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"
MAX_RECIPIENTS = 100
_END = b"\r\n.\r\n"               # the end of DATA: a line of one "." (RFC 5321 section 4.1.1.4)
# aiosmtpd's own replies that the listener words differently (see above).
_AIOSMTPD_LINE_TOO_LONG = "500 Line too long"
_REWRITE = {"530 Must issue a STARTTLS command first": REPLY_NEED_TLS}

# An SMTP path in its common form: "<local@domain>" with dot-atoms on both sides (RFC
# 5322 atext), then the parameters, if any, after spaces; or the null path "<>".
# aiosmtpd reads every MAIL and RCPT argument with the email package's RFC 5322 parser,
# and defines a typing.Protocol class on each call: together about a fifth of the
# listener's CPU. For these forms the answer is the text itself; anything else (quoted
# local parts, comments, address literals, non-ASCII) still goes to aiosmtpd.
# tests/integration/test_smtp.py compares both readers.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>[ \t]*(.*)", re.S)

Enqueue = Callable[[Inbound], Awaitable[bool]]


class SmtpIngress:
    """aiosmtpd handler: wire input to an Inbound, durably enqueued, then 250 or 451."""

    def __init__(self, settings: Settings, enqueue: Enqueue, clock: Callable[[], datetime]) -> None:
        self._route = Router(settings)
        self._enqueue = enqueue
        self._clock = clock
        self.in_flight = 0
        self.accepted = 0
        self.deferred = 0
        self.lines_too_long = 0           # messages answered 451 for a line over smtp.max_line_length

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self._route(address) is None:
            log.info("rcpt refused", extra={"rcpt": address_hash(address.lower())})
            return REPLY_UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return REPLY_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_flight += 1
        try:
            raw = envelope.original_content
            if not isinstance(raw, bytes):    # aiosmtpd gives bytes when decode_data=False
                raw = (raw or "").encode("utf-8", "surrogateescape")
            # The null reverse-path (RFC 5321 section 4.5.5, used by bounces) is stored as "".
            mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
            item = Inbound.from_smtp(raw, mail_from, tuple(envelope.rcpt_tos), self._clock())
            await self._enqueue(item)         # returns only once the item is durable
        except Exception as exc:              # noqa: BLE001 - every failure must become a 451, never a 250 or 500
            self.deferred += 1
            log.warning("enqueue failed, answered 451: %s", type(exc).__name__)
            return REPLY_TRY_LATER
        finally:
            self.in_flight -= 1
        self.accepted += 1
        log.info("accepted", extra={"item_id": item.id, "bytes": len(raw)})
        return f"250 2.0.0 OK queued as {item.id[:16]}"

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answer is a permanent 500, which makes senders drop the mail.
        log.error("smtp session error: %s", type(error).__name__)
        return REPLY_TRY_LATER


def client_key(peer: Any, ipv6_prefix: int = 64) -> str:
    """The client a connection counts against: its IPv4 address (IPv4-mapped IPv6 too),
    or its IPv6 address cut to `ipv6_prefix` bits, since one IPv6 host commonly has a
    whole /64 to pick from. A peer that is not an IP address (a Unix socket) is "local"."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if not isinstance(host, str):
        return "local"
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


class ClientGate:
    """Who may open a session: the listener's admission policy, shared by all its sessions.

    In the order checked: the global cap (`max_sessions`, 421 4.3.2); a token bucket per
    client (`per_client_rate` new connections a second, `per_client_burst` at once),
    enforced only on a client holding at least `rate_after_sessions` sessions or while
    the listener is under stress (0: always), so that an MTA sending at full speed over
    many short sessions is served; `per_client_sessions` concurrent sessions per client;
    and the last `reserved_slots` of the cap, which a client already holding more than
    `heavy_client_sessions` cannot take. Above `stress_threshold` of the cap the listener is under stress (until it is
    back to 90 % of that): idle sessions get `stress_idle_timeout` (see `timeout`),
    existing ones at once.

    Memory is bounded: the session counts have one entry per client holding a session
    (at most `max_sessions`); the buckets are an LRU map of at most `table_size` clients,
    from which a client whose bucket has filled up again is dropped (a full bucket is
    what a new client gets). Forgetting a client early takes more than `table_size`
    distinct clients within `per_client_burst / per_client_rate` seconds.
    """

    def __init__(self, max_sessions: int, *, sessions: set[Any] | None = None, per_client_sessions: int = 0,
                 per_client_rate: float = 0.0, per_client_burst: int = 1, rate_after_sessions: int = 0,
                 reserved_slots: int = 0,
                 heavy_client_sessions: int = 0, stress_threshold: float = 1.0,
                 stress_idle_timeout: float | None = None, exempt: Iterable[str] = (), table_size: int = 10000,
                 ipv6_prefix: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.sessions: set[Any] = set() if sessions is None else sessions
        self.per_client_sessions = per_client_sessions
        self.rate = per_client_rate
        self.burst = float(per_client_burst)
        self.rate_after_sessions = rate_after_sessions
        # At most max_sessions - 1 reserved: a cap of 2 with the default 20 still admits someone.
        self.reserved_slots = min(reserved_slots, max_sessions - 1)
        self.heavy_client_sessions = heavy_client_sessions
        self.stress_above = stress_threshold * max_sessions
        # ... and it ends a little lower, so that a listener hovering at the threshold
        # does not flip (each entry shortens every session and logs a warning).
        self.stress_ends_at = 0.9 * self.stress_above
        self.stress_idle_timeout = stress_idle_timeout
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self.table_size = table_size
        self.ipv6_prefix = ipv6_prefix
        self.clock = clock
        self.held: dict[str, int] = {}                                # client -> sessions it holds
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # client -> (tokens, at)
        self.stressed = False
        self.refused = {"busy": 0, "client_sessions": 0, "client_rate": 0, "reserved": 0}
        self.stress_entered = 0

    @classmethod
    def from_settings(cls, settings: Settings, sessions: set[Any] | None = None) -> ClientGate:
        smtp = settings.smtp
        return cls(smtp.max_sessions, sessions=sessions, per_client_sessions=smtp.per_client_sessions,
                   per_client_rate=smtp.per_client_rate, per_client_burst=smtp.per_client_burst,
                   rate_after_sessions=smtp.rate_after_sessions,
                   reserved_slots=smtp.reserved_slots, heavy_client_sessions=smtp.heavy_client_sessions,
                   stress_threshold=smtp.stress_threshold, stress_idle_timeout=smtp.stress_idle_timeout,
                   exempt=smtp.exempt_clients, table_size=smtp.client_table_size,
                   ipv6_prefix=smtp.client_ipv6_prefix)

    def client(self, peer: Any) -> tuple[str, bool]:
        """The client key of a peer address, and whether the peer is in `exempt` (judged on
        its own address, so that one exempt IPv6 host does not need its whole /64)."""
        key = client_key(peer, self.ipv6_prefix)
        if not self.exempt or key == "local":
            return key, False
        try:
            ip = ipaddress.ip_address(key if "/" not in key else peer[0].partition("%")[0])
        except ValueError:
            return key, False
        return key, any(ip in net for net in self.exempt)

    def check(self, key: str, exempt: bool = False) -> str | None:
        """None when `key` may open one more session now (and a token is spent), else the
        421 reply that refuses it. An `exempt` client meets only the global cap."""
        total = len(self.sessions)
        if total >= self.max_sessions:
            return self._refuse("busy", REPLY_BUSY)
        if exempt:
            return None
        held = self.held.get(key, 0)
        if self.rate > 0 and not self._take_token(key) and self._rate_applies(held, total):
            return self._refuse("client_rate", REPLY_CLIENT_RATE)
        if self.per_client_sessions and held >= self.per_client_sessions:
            return self._refuse("client_sessions", REPLY_CLIENT_SESSIONS)
        if total >= self.max_sessions - self.reserved_slots and held > self.heavy_client_sessions:
            return self._refuse("reserved", REPLY_RESERVED)
        return None

    def _rate_applies(self, held: int, total: int) -> bool:
        """Whether a client holding `held` of `total` sessions is held to its rate now."""
        return (self.rate_after_sessions == 0 or held >= self.rate_after_sessions
                or self.stressed or total > self.stress_above)

    def _refuse(self, reason: str, reply: str) -> str:
        self.refused[reason] += 1
        return reply

    def _take_token(self, key: str) -> bool:
        now = self.clock()
        buckets = self._buckets
        entry = buckets.pop(key, None)
        tokens = self.burst if entry is None else min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        allowed = tokens >= 1.0
        buckets[key] = (tokens - 1.0 if allowed else tokens, now)     # now the most recently used
        while buckets:                       # drop the least recently used while full again, or over the cap
            oldest_tokens, oldest_at = next(iter(buckets.values()))
            if len(buckets) <= self.table_size and oldest_tokens + (now - oldest_at) * self.rate < self.burst:
                break
            buckets.popitem(last=False)
        return allowed

    @property
    def clients_remembered(self) -> int:
        return len(self._buckets)

    def add(self, session: Any, key: str) -> None:
        self.sessions.add(session)
        self.held[key] = self.held.get(key, 0) + 1
        if not self.stressed and len(self.sessions) > self.stress_above:
            self.stressed = True
            self.stress_entered += 1
            log.warning("smtp under stress: %d of %d sessions, idle timeout now %ss",
                        len(self.sessions), self.max_sessions, self.stress_idle_timeout)
            if self.stress_idle_timeout is not None:
                for other in list(self.sessions):
                    other.shorten_deadline(self.stress_idle_timeout)

    def release(self, session: Any, key: str) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        left = self.held.get(key, 1) - 1
        if left > 0:
            self.held[key] = left
        else:
            self.held.pop(key, None)
        if self.stressed and len(self.sessions) <= self.stress_ends_at:
            self.stressed = False
            log.info("smtp no longer under stress: %d of %d sessions", len(self.sessions), self.max_sessions)

    def timeout(self, normal: float) -> float:
        """The idle timeout a session gets now: `normal`, or the stress one when shorter."""
        if self.stressed and self.stress_idle_timeout is not None:
            return min(normal, self.stress_idle_timeout)
        return normal


class _LineLengths:
    """The longest CRLF-ended line (CRLF included) of a stream read in chunks, and the
    line still open, whichever is longer. Linear: bytes.split does the scanning."""

    def __init__(self) -> None:
        self.open = 0                 # bytes of the line not yet ended
        self.cr = False               # the last chunk ended in CR: an LF next ends that line
        self.longest = 0

    def longest_after(self, chunk: bytes) -> int:
        if self.cr and chunk.startswith(b"\n"):
            self.longest = max(self.longest, self.open + 1)
            self.open, chunk = 0, chunk[1:]
        pieces = chunk.split(b"\r\n")
        if len(pieces) == 1:
            self.open += len(chunk)
        else:
            self.longest = max(self.longest, self.open + len(pieces[0]) + 2,
                               max(map(len, pieces[1:-1]), default=-2) + 2)
            self.open = len(pieces[-1])
        self.cr = chunk.endswith(b"\r")
        return max(self.longest, self.open)


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with the listener's limits: sessions admitted by a ClientGate,
    idle and DATA deadlines that shorten under stress, room for long lines, and
    replies that never tell a sender to drop a message it could deliver later."""

    def __init__(self, handler: SmtpIngress, sessions: set[_LimitedSMTP], max_sessions: int, *,
                 gate: ClientGate | None = None, min_data_rate: float = 0.0,
                 line_length_limit: int = 64 * 1024, **kwargs: Any) -> None:
        # Read by SMTP.__init__ as the stream reader's limit, which is also what a command
        # line may take in memory before it gets "500 Command line too long".
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)
        self._gate = gate if gate is not None else ClientGate(max_sessions, sessions=sessions)
        self._client = "local"
        self._admitted = False
        self._min_data_rate = min_data_rate
        self._deadline = 0.0
        self._in_data = False             # between "354" and the reply that ends DATA
        self._storing = False             # the handler is storing the message

    def admit(self, transport: asyncio.BaseTransport, key: str) -> None:
        """Called by the door once the gate let this session in."""
        self._client = key
        self._admitted = True
        self._gate.add(self, key)
        self.connection_made(transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admitted:            # used without a door (tests): ask the gate here
            key, exempt = self._gate.client(transport.get_extra_info("peername"))
            reply = self._gate.check(key, exempt)
            if reply is not None:
                transport.write((reply + "\r\n").encode())      # type: ignore[attr-defined]
                transport.close()
                return
            self._client, self._admitted = key, True
            self._gate.add(self, key)
        super().connection_made(transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if arg.startswith("<>"):      # the null reverse-path of bounces; aiosmtpd keeps what follows as is
            return "<>", arg[2:]
        match = _PLAIN_PATH.fullmatch(arg)
        if match is None or match.group(2).startswith("("):
            return super()._getaddr(arg)
        address, rest = match.groups()
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def push(self, status: Any) -> None:
        if self._in_data:
            self._in_data = False                     # any reply after 354 ends DATA
        if isinstance(status, str):
            if status.startswith("354"):
                self._in_data = True
            elif status.startswith(_AIOSMTPD_LINE_TOO_LONG):
                self.event_handler.lines_too_long += 1
                log.warning("a message line was longer than %d octets, answered 451", self.line_length_limit)
                status = REPLY_LINE_TOO_LONG
            else:
                status = _REWRITE.get(status, status)
        await super().push(status)

    # DATA. aiosmtpd reads the message a line at a time in Python: for a 300 KB message of
    # short lines that was most of the listener's CPU during a hostile burst (issue 22),
    # and ordinary mail waited for the loop behind it. This reader finds the end
    # (CRLF "." CRLF, RFC 5321 section 4.1.1.4) with StreamReader.readuntil, which searches
    # in C, so its cost does not grow with the number of lines; line lengths are measured
    # with bytes.split. The replies are aiosmtpd's: 500 for an over-long line (which push
    # turns into 451), 552 beyond data_size_limit, each only after the end has arrived
    # (RFC 5321 section 4.2.5). A bare LF "." LF does not end DATA (SMTP smuggling).

    put_back = True                   # see _read_data; the tests turn it off to try the other way

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, error = await self._read_data()
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if error is not None:
            await self.push(error)
            self._set_post_data_state()
            return
        self.envelope.original_content = content
        # The listener takes bytes (decode_data=False); decoding is aiosmtpd's, for completeness.
        self.envelope.content = content.decode("utf-8", "surrogateescape") if self._decode_data else content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, str | None]:
        """The message up to its end line, dot-stuffing undone (RFC 5321 section 4.5.2),
        and None; or b"" and the reply for a line or a message too long (all of it read)."""
        reader = self._reader
        parts: list[bytes] = []
        tail = _END[:2]               # the CRLF that ended the DATA command: a "." line may come first
        lines = _LineLengths()
        size = 0
        buffered = getattr(reader, "_buffer", None)
        if self.put_back and isinstance(buffered, bytearray):
            # That CRLF goes back in front of what is buffered, so that readuntil finds an
            # end line even as the first line. (asyncio keeps the buffer as a bytearray,
            # which aiosmtpd itself clears on STARTTLS.) Without it, the end line is
            # looked for piece by piece below, correct but slow on some inputs.
            buffered[0:0] = _END[:2]
            tail, size = b"", -2      # the first chunk read carries it; dropped below
        error: str | None = None
        limit = self.data_size_limit
        while True:
            # Could what was read last be the start of the end line? Then read only what
            # would complete it (never past it: pipelined commands may follow).
            k = next((k for k in (4, 3, 2, 1) if tail.endswith(_END[:k])), 0)
            if k:
                chunk = await reader.readexactly(len(_END) - k)
                ended = chunk == _END[k:]
            else:
                try:
                    chunk = await reader.readuntil(_END)
                    ended = True
                except asyncio.LimitOverrunError as exc:      # no end yet within the buffer's limit
                    chunk = await reader.read(exc.consumed)
                    ended = False
            size += len(chunk) - (3 if ended else 0)          # the "." line is not the message's
            if error is None and lines.longest_after(chunk) > self.line_length_limit:
                error, parts = "500 Line too long (see RFC5321 4.5.3.1.6)", []
            elif error is None and limit and size > limit:
                error, parts = "552 Error: Too much mail data", []
            elif error is None:
                parts.append(chunk)
            if ended:
                break
            if tail:
                tail = (tail + chunk)[-4:]
        if error is not None:
            return b"", error
        data = b"".join(parts)[:-3]   # less the "." line; the CRLF before it ends the last line
        if not tail:
            data = data[2:]           # less the CRLF put back in front
        if data.startswith(b".") or b"\r\n." in data:
            data = (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
        return data, None

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        self._storing = True                          # the deadline waits for the store (bounded there)
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._storing = False
            if self.transport is not None:
                self._reset_timeout()                 # a whole idle timeout for the next command

    # Deadlines. aiosmtpd arms one timer per command: a whole command line must arrive
    # within the idle timeout after the previous one, so dribbling a byte at a time does
    # not keep a session. Here the timeout is the gate's (shorter under stress), and in
    # DATA every received byte moves the deadline on by 1/min_data_rate seconds, up to
    # the idle timeout from now: a large message on a slow link is not cut, a dribble is.
    # The timer is lazy: it fires at the old deadline and re-arms if it moved.

    def _reset_timeout(self, duration: float | None = None) -> None:
        timeout = duration or self._gate.timeout(self._timeout_duration)
        self._deadline = self.loop.time() + timeout
        self._arm(self._deadline)

    def _arm(self, when: float) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._timeout_handle = self.loop.call_at(when, self._timeout_cb)

    def shorten_deadline(self, timeout: float) -> None:
        """The listener came under stress: this session's deadline is at most `timeout` away."""
        if self.transport is None or self._timeout_handle is None:
            return
        when = self.loop.time() + timeout
        if when < self._deadline:
            self._deadline = when
            self._arm(when)

    def data_received(self, data: bytes) -> None:
        if self._in_data and self._min_data_rate:
            limit = self.loop.time() + self._gate.timeout(self._timeout_duration)
            self._deadline = min(self._deadline + len(data) / self._min_data_rate, limit)
        super().data_received(data)

    def _timeout_cb(self) -> None:
        now = self.loop.time()
        if self._storing or self._deadline - now > 0.005:
            # Moved on by DATA, or the message is being stored: cutting the session then
            # would only make the sender send it again.
            self._arm(max(self._deadline, now + 0.1))
            return
        # aiosmtpd closes an idle session silently; RFC 5321 section 4.2.2 wants a 421 first.
        if self.transport is not None:
            self.transport.write((REPLY_IDLE + "\r\n").encode())
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return                                                # refused in connection_made
        self._admitted = False
        self._gate.release(self, self._client)
        super().connection_lost(error)


class _Door(asyncio.Protocol):
    """What a new connection meets first. Building an aiosmtpd session costs about 0.16 ms
    of CPU (it inspects the handler), too much to spend on each connection of a flood
    that is refused anyway: the door asks the gate, refuses with a 421 and a close, or
    hands the transport to a new session."""

    __slots__ = ("_server",)

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._server.gate
        key, exempt = gate.client(transport.get_extra_info("peername"))
        reply = gate.check(key, exempt)
        if reply is not None:
            transport.write((reply + "\r\n").encode())         # type: ignore[attr-defined]
            transport.close()
            return
        session = self._server._session()
        transport.set_protocol(session)
        session.admit(transport, key)

    def data_received(self, data: bytes) -> None:      # only a refused client talks to the door
        pass

    def eof_received(self) -> bool | None:
        return None


class SmtpServer:
    """Starts and stops the listener on the running loop."""

    def __init__(self, settings: Settings, ingress: SmtpIngress) -> None:
        self._settings = settings
        self.ingress = ingress
        self._sessions: set[_LimitedSMTP] = set()
        self.gate = ClientGate.from_settings(settings, self._sessions)
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self.tls_reloads = 0
        self.tls_reload_failures = 0

    def _session(self) -> _LimitedSMTP:
        smtp = self._settings.smtp
        return _LimitedSMTP(
            self.ingress, self._sessions, smtp.max_sessions, gate=self.gate,
            min_data_rate=smtp.min_data_rate, line_length_limit=smtp.max_line_length,
            data_size_limit=smtp.max_message_size, enable_SMTPUTF8=True, decode_data=False,
            hostname=smtp.hostname, ident="unsubd", timeout=smtp.idle_timeout,
            tls_context=self._tls, require_starttls=smtp.require_tls,
        )

    def _door(self) -> _Door:
        return _Door(self)

    def _load_tls(self) -> ssl.SSLContext | None:
        smtp = self._settings.smtp
        if smtp.tls_cert is None or smtp.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # An encrypted key would make OpenSSL prompt on the terminal; an empty password fails instead.
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key, password=lambda: b"")
        return context

    def reload_tls(self) -> bool:
        """Reread the certificate and key (on SIGHUP): new connections get them, sessions
        already open keep theirs. A pair that does not load leaves the old one in use;
        returns whether the new one was taken."""
        if self._settings.smtp.tls_cert is None:
            return False
        try:
            context = self._load_tls()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.tls_reload_failures += 1
            log.error("smtp TLS certificate reload failed, keeping the previous one: %s: %s",
                      type(exc).__name__, exc)
            return False
        self._tls = context
        self.tls_reloads += 1
        log.info("smtp TLS certificate reloaded")
        return True

    async def start(self) -> tuple[str, int]:
        try:
            self._tls = self._load_tls()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"smtp.tls_cert / smtp.tls_key do not load: {type(exc).__name__}: {exc}") from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._door, self._settings.smtp_host, self._settings.smtp_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("smtp listening on %s:%s", host, port, extra={"starttls": self._tls is not None})
        return host, port

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def counters(self) -> dict[str, int]:
        """The listener's refusals and limits, for /metrics (names without the unsubd_ prefix)."""
        gate = self.gate
        out = {f"smtp_refused_{reason}_total": n for reason, n in gate.refused.items()}
        out["smtp_stress"] = int(gate.stressed)
        out["smtp_stress_entered_total"] = gate.stress_entered
        out["smtp_clients"] = len(gate.held)
        out["smtp_line_too_long_total"] = self.ingress.lines_too_long
        out["smtp_tls_reloads_total"] = self.tls_reloads
        out["smtp_tls_reload_failures_total"] = self.tls_reload_failures
        return out

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let messages being stored finish, then drop idle sessions.

        A client cut off before its 250 has not been told the message is ours, so it
        retries: nothing is lost.
        """
        if self._server is None:
            return
        self._server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.ingress.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None
