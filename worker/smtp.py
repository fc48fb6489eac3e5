"""The SMTP listener: aiosmtpd on the worker's own event loop. Adapts, never decides.

Promise 1 (DESIGN.md): `250` only after the item is durably stored; anything else
answers 4xx so the sending MTA keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from typing import Any, Awaitable, Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from config import Settings
from handlers.addresses import address_hash
from handlers.model import Inbound
from handlers.routing import Router

log = logging.getLogger("unsubd.smtp")

REPLY_OK = "250 2.1.5 OK"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient not accepted here (no relay)"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure storing the message, try again later"
REPLY_BUSY = "421 4.3.2 Too many connections, try again later"
MAX_RECIPIENTS = 100

# An SMTP path in its common form: "<local@domain>" with dot-atoms on both sides (RFC
# 5322 atext), then the parameters, if any, after spaces; or the null path "<>".
# aiosmtpd reads every MAIL and RCPT argument with the email package's RFC 5322 parser,
# and defines a typing.Protocol class on each call: together about a fifth of the
# listener's CPU. For these forms the answer is the text itself; anything else (quoted
# local parts, comments, address literals, non-ASCII) still goes to aiosmtpd.
# tests/test_smtp.py compares both readers.
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


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with a cap on concurrent sessions (421 beyond it) and room for long lines."""

    # RFC 5321 section 4.5.3.1.6 caps a line at 998 octets, but Exchange DSNs and
    # unwrapped HTML exceed it (half of the sisimai bounce corpus does), and aiosmtpd
    # answers those with a permanent 500, so the sender drops the bounce. Accept lines
    # up to 64 KiB, as Postfix accepts and splits them; the message size limit still holds.
    line_length_limit = 64 * 1024

    def __init__(self, handler: SmtpIngress, sessions: set[_LimitedSMTP], max_sessions: int,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        self._max_sessions = max_sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._sessions) >= self._max_sessions and self not in self._sessions:
            transport.write((REPLY_BUSY + "\r\n").encode())      # type: ignore[attr-defined]
            transport.close()
            return
        self._sessions.add(self)
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

    def _timeout_cb(self) -> None:
        # aiosmtpd closes an idle session silently; RFC 5321 section 4.2.2 wants a 421 first.
        if self.transport is not None:
            self.transport.write(b"421 4.4.2 Idle for too long, closing connection\r\n")
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        if self not in self._sessions:
            return                                                # refused in connection_made
        self._sessions.discard(self)
        super().connection_lost(error)


class SmtpServer:
    """Starts and stops the listener on the running loop."""

    def __init__(self, settings: Settings, ingress: SmtpIngress) -> None:
        self._settings = settings
        self.ingress = ingress
        self._sessions: set[_LimitedSMTP] = set()
        self._server: asyncio.Server | None = None

    def _protocol(self) -> _LimitedSMTP:
        smtp = self._settings.smtp
        return _LimitedSMTP(
            self.ingress, self._sessions, smtp.max_sessions,
            data_size_limit=smtp.max_message_size, enable_SMTPUTF8=True, decode_data=False,
            hostname=smtp.hostname, ident="unsubd", timeout=smtp.idle_timeout,
        )

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._settings.smtp_host,
                                                self._settings.smtp_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        log.info("smtp listening on %s:%s", host, port)
        return host, port

    @property
    def sessions(self) -> int:
        return len(self._sessions)

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
