"""A `serve` process started while PostgreSQL is away waits for it (issue 22: outages are
not poison, and a restart during an outage is not a crash loop): worker.app.until_reachable.

The database is reached through a TCP proxy (tests/support/outage_support.TcpProxy) that
is cut before the process starts and restored while it waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from config import ConfigError
from worker.app import Worker, until_reachable
from tests.conftest import PG_HOST, PG_PORT, make_settings
from tests.support.outage_support import TcpProxy

FAST = {"UNSUBD_CONSUMER__OUTAGE_BACKOFF_BASE": "0.05", "UNSUBD_CONSUMER__OUTAGE_BACKOFF_MAX": "0.2"}


def _through(proxy: TcpProxy, pg_url: str) -> str:
    return pg_url.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")


async def test_a_process_started_in_a_database_outage_starts_when_it_returns(pg_url):
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    url = _through(proxy, pg_url)
    await proxy.cut()
    worker = Worker(make_settings(url, UNSUBD_STARTUP_WAIT="30", **FAST), roles=("relay",))
    started = asyncio.create_task(worker.start())
    try:
        await asyncio.sleep(0.8)
        assert not started.done(), "start gave up (or passed) while the database was away"
        await proxy.restore()
        await asyncio.wait_for(started, 20)
        assert worker._relay_task is not None and not worker._relay_task.done()
    finally:
        if not started.done():
            started.cancel()
        await worker.stop()
        await proxy.close()


async def test_the_wait_is_bounded_and_then_the_outage_is_the_error(pg_url):
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    url = _through(proxy, pg_url)
    await proxy.cut()
    worker = Worker(make_settings(url, UNSUBD_STARTUP_WAIT="0.5", **FAST), roles=("relay",))
    t0 = time.monotonic()
    try:
        with pytest.raises(Exception) as raised:
            await worker.start()
        assert not isinstance(raised.value, ConfigError)
        assert time.monotonic() - t0 < 10
    finally:
        await worker.stop()
        await proxy.close()


async def test_an_error_that_is_not_an_outage_is_raised_at_once():
    settings = make_settings(UNSUBD_STARTUP_WAIT="30", **FAST)
    calls = 0

    async def wrong() -> None:
        nonlocal calls
        calls += 1
        raise ConfigError("the database is not at the newest schema")

    t0 = time.monotonic()
    with pytest.raises(ConfigError):
        await until_reachable("database", wrong, settings)
    assert calls == 1 and time.monotonic() - t0 < 1


async def test_an_outage_is_tried_again_until_it_ends():
    settings = make_settings(UNSUBD_STARTUP_WAIT="30", **FAST)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError("refused")

    await until_reachable("database", flaky, settings)
    assert calls == 4
