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


def service_missing(what: str) -> None:
    """A needed service is not there: fail in CI (nothing may pass untested), skip locally."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true: a missing service fails the test")
    pytest.skip(f"{what} is not reachable (start it; in CI this fails)")


def port_open(host: str, port: int) -> bool:
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
    from worker import migrate
    from worker.db import Database

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
    from worker import migrate
    from worker.db import Database

    db = Database.connect(db_url)
    await migrate.upgrade(db.engine)
    try:
        yield db
    finally:
        await db.close()
