"""Structured logs: one JSON object per line, with the `extra` fields of each call.

Addresses never appear in clear: callers pass `handlers.mail.addresses.address_hash(...)`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

CHATTY = ("mail.log", "aiohttp.access", "aiohttp.server", "aiohttp.web", "aiosqlite", "sqlalchemy", "asyncpg",
          "aio_pika", "aiormq", "pamqp", "alembic")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log data, not events, below WARNING: aiosmtpd every peer address and
    # envelope, aiohttp every request path (/v1/contacts/{address}), the database drivers
    # and SQLAlchemy every statement with its parameters, the AMQP clients their frames.
    # They stay at WARNING whatever `log_level` says (tests/e2e/test_logs_private.py).
    numeric = logging.getLevelName(level.upper())
    quiet = max(logging.WARNING, numeric if isinstance(numeric, int) else logging.WARNING)
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)
