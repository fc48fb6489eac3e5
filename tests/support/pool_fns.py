"""Classifier stand-ins for tests/integration/test_pool.py.

They run in the pool's worker processes, so they are top-level (picklable by name). One
function, `act`, misbehaves in the way the item's bytes ask for, so a single pool can
be shown to survive each kind of failure and keep classifying afterwards.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from typing import Any

from handlers.model import Decision, Inbound, Kind


def act(item: Inbound, ctx: Any, now: datetime) -> Decision:
    command = item.raw.split(b" ", 1)[0]
    if command == b"busy":                  # CPU-bound forever
        while True:
            pass
    if command == b"hog":                   # far beyond any memory_mb used in the tests
        hoard = bytearray(1 << 30)
        return Decision.ignore(item.id, Kind.UNKNOWN, reason=f"allocated {len(hoard)}")
    if command == b"segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if command == b"exit":
        os._exit(3)
    if command == b"sleep":                 # stuck without using CPU
        time.sleep(600)
    if command == b"raise":
        raise ValueError("no header named X-Test")
    if command == b"pid":
        return Decision.ignore(item.id, Kind.UNKNOWN, reason=str(os.getpid()))
    return Decision.ignore(item.id, Kind.UNKNOWN, reason=f"ok {item.raw.decode()}",
                           evidence={"mail_domain": ctx.mail_domain})


POISON_MARK = b"X-Test-Poison: cpu"


def poisoned(item: Inbound, ctx: Any, now: datetime) -> Decision:
    """The real classifier, except that a message carrying POISON_MARK spins on the CPU.

    Since handlers/ reads every input in linear time (issue 22), no real message is slow
    enough to reach the sandbox's limits; this stands in for the next one that is.
    """
    if POISON_MARK in item.raw:
        while True:
            pass
    from handlers.classify import classify

    return classify(item, ctx, now)


def poison_message() -> bytes:
    """A well-formed bounce-looking message that `poisoned` never finishes."""
    return (b"From: Mailer-Daemon <mailer-daemon@mx.example.net>\r\nTo: bounces@example.org\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <poison-1@mx.example.net>\r\n"
            + POISON_MARK + b"\r\n\r\nThis message could not be delivered.\r\n")
