"""The per-client limit on sign-in attempts: a token bucket per client address.

The per-account lockout (worker.console.accounts) stops guessing one account's
password; this stops one client from trying many accounts, or from spending the
server's Argon2 time. Each client address (an IPv6 client by its /64, which one
subscriber usually holds whole) has a bucket of `burst` attempts that refills at
`per_minute`; an attempt with the bucket empty is refused before any password is
checked. At most `capacity` addresses are kept, the least recently seen forgotten
first, so a flood of addresses costs bounded memory: a forgotten address starts again
with a full bucket, which only a client that holds that many addresses can use.

Behind a reverse proxy every client has the proxy's address and shares one bucket;
the address is the connection's, never a header a client could write.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from datetime import datetime


def client_key(peer: str | None) -> str:
    """The bucket's key for a peer address: an IPv4 address as it is, an IPv6 one by its
    /64 (an IPv4-mapped one as IPv4); anything unreadable shares the key "?"."""
    try:
        address = ipaddress.ip_address((peer or "").split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class SignInLimit:
    """Token buckets by client key, at most `capacity` of them. Not thread-safe: used
    on the event loop only."""

    def __init__(self, per_minute: float, burst: int, capacity: int) -> None:
        self.rate = per_minute / 60.0           # tokens per second
        self.burst = float(burst)
        self.capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, datetime]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: datetime) -> float:
        """Spend one attempt of `key`'s bucket: 0.0 when allowed, else the seconds until
        one attempt is back (the bucket is left as it was)."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        elapsed = max(0.0, (now - at).total_seconds())
        tokens = min(self.burst, tokens + elapsed * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)   # the least recently seen
        return wait
