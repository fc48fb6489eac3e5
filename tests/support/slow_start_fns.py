"""A classifier stand-in whose module takes a second to import, so a worker that uses it
takes that long to start (for tests/integration/test_pool.py; importing it here costs the same once)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from handlers.model import Decision, Inbound, Kind

time.sleep(1.0)


def quick(item: Inbound, ctx: Any, now: datetime) -> Decision:
    return Decision.ignore(item.id, Kind.UNKNOWN, reason="quick")
