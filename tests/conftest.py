"""Shared fixtures: settings from a dict, and databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

import config
from config import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_TOML = REPO / "config" / "example.toml"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST, PG_PORT = os.environ.get("UNSUBD_TEST_PG_HOST", "127.0.0.1"), 5432
PG_ADMIN_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/postgres"


# The markers of tests that need a service (pyproject.toml registers them; --strict-markers).
# A test gets its marker from the fixtures it uses (below), or from a `pytestmark` in its
# module when it reaches the service itself; `service_missing` checks that it has one, so
# `pytest -m "not rabbitmq"` can be trusted to leave out every test that needs RabbitMQ.
SERVICE_FIXTURES = {
    "postgres": {"pg_url", "rabbit_backend"},
    "rabbitmq": {"rabbit", "names", "rabbit_backend"},
    "browser": {"served"},
}
SERVICE_PARAMS = {"postgres": "postgres", "rabbitmq": "rabbitmq"}   # a parameter id naming the service
_running: list[pytest.Item] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = " ".join(str(v) for v in callspec.params.values()) if callspec else ""
        for marker, fixtures in SERVICE_FIXTURES.items():
            if used & fixtures or (marker in SERVICE_PARAMS and SERVICE_PARAMS[marker] in params):
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _marker_for(what: str) -> str:
    lowered = what.lower()
    return "postgres" if "postgres" in lowered else "rabbitmq" if "rabbitmq" in lowered else "browser"


def service_missing(what: str) -> None:
    """A needed service is not there: fail in CI (nothing may pass untested), skip locally.

    A test that reaches a service must carry its marker: one without it fails here, so
    that `-m "not postgres"` and the like never hide a test that needs the service.
    """
    marker = _marker_for(what)
    if _running and _running[-1].get_closest_marker(marker) is None:
        pytest.fail(f"{_running[-1].nodeid} needs {what} but is not marked `{marker}`")
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true: a missing service fails the test")
    pytest.skip(f"{what} is not reachable (start it; in CI this fails)")


SERVICE_PORTS = {PG_PORT: "postgres", 5672: "rabbitmq"}


def port_open(host: str, port: int) -> bool:
    """Whether a service listens there. Every test asks this before it uses PostgreSQL or
    RabbitMQ, so a test that asks without the service's marker fails here, service up or not."""
    marker = SERVICE_PORTS.get(port)
    if marker and _running and _running[-1].get_closest_marker(marker) is None:
        pytest.fail(f"{_running[-1].nodeid} uses {marker} but is not marked `{marker}`")
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def make_settings(db_url: str = "sqlite+aiosqlite:///:memory:", **env: str) -> Settings:
    base = {"UNSUBD_DATABASE_URL": db_url, "UNSUBD_SMTP_PORT": "0", "UNSUBD_HTTP_PORT": "0"}
    return config.load({**base, **env}, EXAMPLE_TOML)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings


async def _create_pg_database() -> str:
    import asyncpg

    name = f"unsubd_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'unsubd.db'}"
        return
    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = await _create_pg_database()
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await _drop_pg_database(name)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database only (production's backend)."""
    from worker.store import migrate
    from worker.store.db import Database

    if not port_open(PG_HOST, PG_PORT):
        service_missing(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    name = await _create_pg_database()
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    db = Database.connect(url)
    try:
        await migrate.upgrade(db.engine)      # production: `unsubd db upgrade` runs before serve
    finally:
        await db.close()
    try:
        yield url
    finally:
        await _drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'unsubd.db'}"


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Any]:
    """A migrated Database on each backend."""
    from worker.store import migrate
    from worker.store.db import Database

    db = Database.connect(db_url)
    await migrate.upgrade(db.engine)
    try:
        yield db
    finally:
        await db.close()
